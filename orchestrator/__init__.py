"""thpvm: QEMU-based test orchestrator for Linux transparent huge pages and khugepaged."""

__version__ = "0.1.0"
