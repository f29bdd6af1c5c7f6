"""videobert: pretrain and evaluate VideoBERT-style video-language transformers."""
__version__ = "0.1.0"
