"""The web page (web.app) behind infer.py --serve."""
