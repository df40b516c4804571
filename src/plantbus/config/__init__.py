"""Hub files: load, check and describe a plantbus hub configuration."""

from plantbus.config.loader import load_hub
from plantbus.config.model import HubConfig

__all__ = ["HubConfig", "load_hub"]
