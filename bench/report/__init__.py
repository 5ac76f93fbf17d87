"""``python -m bench.report``: one comparison of every method from the results under ``results/``.

Reads the accuracy, parity and fps JSON files (``imsim.results`` schema, any depth below
``--results``) and writes ``results/REPORT.md``: accuracy with confidence intervals per protocol
and dataset, throughput per backend, precision and device with the parity status of that exact
setup, a precision ladder per method (fp32 / fp16 / bf16 / int8 per backend: images/s at one
batch, the ratio to PyTorch fp32 eager on the same machine, the parity gate's figures and
verdict) and a plot (PNG) of accuracy against throughput and of the ladder's speed-up against
the paired accuracy delta. Where one setup was measured more than once, the newest file wins.
Nothing is measured here: every number comes from a file, which is listed; what no file holds
is shown as "not measured".

No file is skipped silently: a ``.json`` that cannot be read or parsed, or a results document of
a reported kind with missing or mistyped fields, is named with the reason on stderr and in the
report's "Files not used" section; results of other kinds (training, search) are counted there.

Modules: ``load`` (the results tree into rows), ``identity`` (method, setup and machine names),
``tables`` and ``ladder`` (Markdown sections), ``plots`` (the PNG), ``build`` (the command).
"""

from bench.report.build import build_report, main
from bench.report.identity import device_label, model_label, setup_key, setup_label

__all__ = ["build_report", "device_label", "main", "model_label", "setup_key", "setup_label"]
