"""Category and attribute heads over adapted features, with calibrated confidence."""

from prediction.calibration import expected_calibration_error, fit_temperature
from prediction.heads import TaskResult, fit_task
from prediction.labels import LabelSpace

__all__ = ["LabelSpace", "TaskResult", "expected_calibration_error", "fit_task", "fit_temperature"]
