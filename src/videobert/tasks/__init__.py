"""Downstream evaluation tasks: each has a Data stage (held-out videos -> batches) and a Metrics module
(`update(model, batch)`, `compute(model) -> {name: value}`), chosen by `data.test_task`."""
from .forecasting import ForecastingData, ForecastingMetrics
from .retrieval import RetrievalData, RetrievalMetrics
from .summarization import SummarizationData, SummarizationMetrics
from .text_to_video import TextToVideoData, TextToVideoMetrics
from .zero_shot import ZeroShotData, ZeroShotMetrics

TASKS = {"zero_shot": ZeroShotData, "retrieval": RetrievalData, "forecasting": ForecastingData,
         "summarization": SummarizationData, "text_to_video": TextToVideoData}

__all__ = ["TASKS", "ForecastingData", "ForecastingMetrics", "RetrievalData", "RetrievalMetrics", "SummarizationData",
           "SummarizationMetrics", "TextToVideoData", "TextToVideoMetrics", "ZeroShotData",
           "ZeroShotMetrics"]
