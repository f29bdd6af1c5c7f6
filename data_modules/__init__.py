"""LightningDataModules that stream WebDataset feature shards into VideoBERT sequences."""
from .quickstart import QuickstartDataModule
from .videobert import VideoBertDataModule

__all__ = ["QuickstartDataModule", "VideoBertDataModule"]
