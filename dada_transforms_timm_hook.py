"""Placeholder for the timm hook (filled in by the timm integration)."""


def install() -> None:
    """Install the hook."""
