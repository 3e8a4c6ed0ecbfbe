"""Level-making parts behind utils.py's CLI: where the hands go, and the real-music corpus."""
