"""The 27 systems meddiff implements, with an honest status of what runs today.

A system is ``works`` only once it runs from the CLI on a bundled model and has its benchmark
row; until then its status names the issue that tracks it (or ``planned``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["works", "in progress", "planned"]


@dataclass(frozen=True)
class System:
    id: str
    family: str
    paper: str
    ref: str  # arXiv id, or the venue where the paper has none
    claim: str = ""  # the paper's headline claim, in our words
    status: Status = "planned"
    issue: int | None = None
    command: str = ""

    @property
    def status_text(self) -> str:
        return self.status + (f" (#{self.issue})" if self.issue and self.status != "works" else "")


def _s(id_, family, paper, ref, issue=None, status: Status = "planned") -> System:
    return System(id_, family, paper, ref, claim=CLAIMS[id_], status=status, issue=issue)



CLAIMS = {
    "S1": "prompt-conditioned samples match their prompt (independent classifier far above chance)",
    "S2": "a segmenter trained only on synthetic pairs nears one trained on real pairs (Dice ratio)",
    "S3": "3D latent samples follow the requested covariates (e.g. ventricle volume)",
    "S4": "scaled latent codes give intermediate frames better than linear interpolation",
    "R1": "a prior learned from undersampled k-space only nears the fully sampled prior",
    "R2": "high-frequency-only diffusion reaches score-MRI quality with fewer NFE",
    "R3": "test-time adaptation recovers quality on an unseen contrast",
    "R4": "one model imputes any missing modality as well as pairwise translators",
    "R5": "k-space-guided DDPM with coarse-to-fine averaging beats CS and gives a variance map",
    "R6": "k-space-only diffusion gives accurate recon and an uncertainty map",
    "R7": "the Langevin chain's std map correlates with the error",
    "R8": "a warm start at t0 keeps the quality at 10-50x fewer steps",
    "R9": "beats zero-filled and CS at 4x and 8x, also on masks it was not tuned on",
    "C1": "a conditional DDPM with a fast ODE solver matches 1000-step quality ~20x faster",
    "C2": "the manifold-constrained gradient improves sparse-view CT / inpainting over projection only",
    "C3": "a DDPM trained on noisy images only denoises better than NLM / TV",
    "C4": "the lambda-weighted consistency step beats FBP / CS in sparse-view CT and MRI",
    "P1": "a conditional DDPM denoises low-count PET better than baselines (MR channel helps)",
    "T1": "conditional DDPM / SDE translation beats a UNet regression (MAE / PSNR / SSIM)",
    "T2": "unpaired adversarial diffusion translates close to held-out true pairs",
    "T3": "one target-domain model + a noise-aware task network serves several tasks",
    "D1": "counterfactual (guided DDIM) maps localise lesions (AUROC / Dice)",
    "D2": "latent partial diffusion localises lesions, much faster than image-space methods",
    "D3": "simplex-noise partial diffusion localises lesions better than Gaussian noise",
    "D4": "classifier-guided DDIM maps localise lesions (AUROC / Dice)",
    "G1": "label-free vessel segmentation beats Frangi vesselness",
    "G2": "ensemble Dice matches a UNet and the variance map flags the errors",
}

SYSTEMS: tuple[System, ...] = (
    _s("S1", "synthesis", "Chambon 2022, vision-language model adapted to radiographs", "2210.04133"),
    _s("S2", "synthesis", "Fernandez 2022, brainSPADE: labels then images", "MICCAI 2022 SASHIMI"),
    _s("S3", "synthesis", "Pinaya 2022, 3D brain latent diffusion", "MICCAI 2022 DGM"),
    _s("S4", "synthesis", "Kim & Ye 2022, diffusion deformable model (4D)", "MICCAI 2022"),
    _s("R1", "MRI reconstruction", "Cui 2022, Self-Score", "2209.00835"),
    _s("R2", "MRI reconstruction", "Cao 2022, high-frequency space SDE", "2208.05481"),
    _s("R3", "MRI reconstruction", "Dar & Cukur 2022, AdaDiff", "2207.05876"),
    _s("R4", "MRI reconstruction", "Meng & Shen 2022, unified conditional score model", "2207.03430"),
    _s("R5", "MRI reconstruction", "Peng 2022, DiffuseRecon", "MICCAI 2022", 3, "works"),
    _s("R6", "MRI reconstruction", "Xie & Li 2022, MC-DDPM", "MICCAI 2022"),
    _s("R7", "MRI reconstruction", "Luo & Uecker 2022, Langevin Markov chain", "2202.01479", 3, "works"),
    _s("R8", "MRI reconstruction", "Chung 2022, CCDF warm start", "2112.05146", 3, "works"),
    _s("R9", "MRI reconstruction", "Chung & Ye 2022, score-MRI", "2110.05243", 3, "works"),
    _s("C1", "CT / OCT / PET", "Xia & Wang 2022, low-dose CT DDPM", "2209.15136"),
    _s("C2", "CT / OCT / PET", "Chung 2022, manifold constrained gradient (MCG)", "2206.00941", 3, "works"),
    _s("C3", "CT / OCT / PET", "Hu & Oguz 2022, OCT denoising", "SPIE MI 2022"),
    _s("C4", "CT / OCT / PET", "Song 2022, score-based inverse problems", "2111.08005", 3, "works"),
    _s("P1", "CT / OCT / PET", "Gong 2022, PET denoising", "2209.06167"),
    _s("T1", "translation", "Lyu & Wang 2022, CT <-> MRI", "2209.12104"),
    _s("T2", "translation", "Ozbey & Cukur 2022, SynDiff", "2207.08208"),
    _s("T3", "translation", "Wolleb 2022, Swiss Army Knife", "2204.02641"),
    _s("D1", "detection", "Sanchez & Tsaftaris 2022, Diff-SCM", "MICCAI 2022 DGM", 4, "works"),
    _s("D2", "detection", "Pinaya 2022, fast latent anomaly detection", "2206.03461", 4, "works"),
    _s("D3", "detection", "Wyatt 2022, AnoDDPM (simplex noise)", "CVPR 2022 workshops", 4, "works"),
    _s("D4", "detection", "Wolleb 2022, classifier-guided anomaly detection", "MICCAI 2022", 4, "works"),
    _s("G1", "segmentation", "Kim & Ye 2022, DARL vessel segmentation", "2209.14566"),
    _s("G2", "segmentation", "Wolleb 2022, implicit segmentation ensembles", "MIDL 2022", 4, "works"),
)

