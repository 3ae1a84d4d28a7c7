"""The ``snn-compile`` command line (entry point: ``snn_compile.cli.main:main``)."""
