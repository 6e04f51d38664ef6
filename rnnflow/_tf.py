"""Import TensorFlow and Keras once, without TensorFlow's start-up chatter on stderr.

TensorFlow prints CUDA probing notes ("Could not find cuda drivers...") from C++ before its log
level applies. Modules that need TensorFlow import this module first.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _quiet_import() -> None:
    if "tensorflow" in sys.modules:
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capture, notebooks)
        fd = None
    saved = None
    if fd is not None:
        sys.stderr.flush()
        saved = os.dup(fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    try:
        import tensorflow as tf
        import keras  # noqa: F401
    finally:
        if saved is not None:
            os.dup2(saved, fd)
            os.close(saved)
    # TensorFlow's Python warnings (e.g. about retracing when batch shapes change between
    # prediction and generation) are about TensorFlow's internals, not the user's spec.
    tf.get_logger().setLevel("ERROR")


_quiet_import()
