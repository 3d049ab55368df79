"""The model: variant rows, block notation, the Keras builder, the Keras-name block map, FLOPs."""
