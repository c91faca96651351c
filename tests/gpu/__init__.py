"""The real-GPU proof (run.sh) and its parts; see README.md."""
