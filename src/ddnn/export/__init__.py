"""Export of trained device sections as dependency-free C99 for microcontrollers (``ddnn export c``).

Modules: ``fold`` (BatchNorm + sign → integer thresholds, sign bits; needs torch), ``c_codegen`` and
``c_layers`` (the C text), ``build`` (compiler + ctypes), ``exporter`` (run directories → files),
``engine`` (:class:`~ddnn.export.engine.CDeviceEngine` for the runtime; loads prebuilt code without
torch) and ``cli``. Nothing is imported here, so importing the package stays torch-free.
"""
