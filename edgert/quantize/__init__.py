"""`edgert quantize`: static INT8 (QDQ) that is only recommended when it is faithful and faster."""

from edgert.quantize.report import Candidate, QuantizeReport, format_report
from edgert.quantize.run import run_quantize

__all__ = ["Candidate", "QuantizeReport", "format_report", "run_quantize"]
