"""nvhook: an OCI hook that gives containers NVIDIA GPUs, a drop-in for NVIDIA's hook."""
__version__ = "0.1.0"
