"""Category and attribute heads over adapted features, with calibrated confidence."""

if __name__ != "prodkg.prediction":  # the folder installs as prodkg.prediction; a bare `import prediction` would load a second copy
    raise ImportError("import prodkg.prediction, not prediction")

from prodkg.prediction.calibration import expected_calibration_error, fit_temperature
from prodkg.prediction.heads import TaskResult, fit_task
from prodkg.prediction.labels import LabelSpace

__all__ = ["LabelSpace", "TaskResult", "expected_calibration_error", "fit_task", "fit_temperature"]
