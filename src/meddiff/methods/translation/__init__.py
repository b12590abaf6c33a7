"""Image translation methods: ``method(model, source01, generator=..., **own_options) ->
target01``, the source images (B, 1, H, W) in [0, 1] to the target domain's image space
(B, 1, H, W) [0, 1] on the CPU. T1's conditional DDPM / score SDE
(:mod:`meddiff.methods.translation.paired`) and the supervised UNet baseline."""
