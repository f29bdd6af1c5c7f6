"""Downstream evaluation tasks: each has a Data stage (held-out videos -> batches) and a Metrics module
(`update(model, batch)`, `compute(model) -> {name: value}`), chosen by `data.test_task`. Fine-tuning tasks
(`finetune = True`, chosen by `data.task`) also give the head to train (`head(encoder)`)."""
from .captioning import CaptioningData, CaptioningMetrics
from .forecasting import ForecastingData, ForecastingMetrics
from .retrieval import RetrievalData, RetrievalMetrics
from .sentiment import SentimentData, SentimentMetrics
from .summarization import SummarizationData, SummarizationMetrics
from .text_to_video import TextToVideoData, TextToVideoMetrics
from .zero_shot import ZeroShotData, ZeroShotMetrics

TASKS = {"zero_shot": ZeroShotData, "retrieval": RetrievalData, "forecasting": ForecastingData,
         "summarization": SummarizationData, "text_to_video": TextToVideoData,
         "sentiment": SentimentData, "captioning": CaptioningData}  # (these two fine-tune: `finetune = True`)

__all__ = ["TASKS", "CaptioningData", "CaptioningMetrics", "SentimentData", "SentimentMetrics", "ForecastingData",
           "ForecastingMetrics", "RetrievalData", "RetrievalMetrics", "SummarizationData",
           "SummarizationMetrics", "TextToVideoData", "TextToVideoMetrics", "ZeroShotData",
           "ZeroShotMetrics"]
