"""Design side: QKeras model, training, hls4ml conversion, synthesis flow.

Needs the ``design`` extra (TensorFlow 2.14, QKeras 0.9, hls4ml 1.3.0).
"""
