"""User-facing tasks built on the API: each is a small module the CLI and the benches share."""
