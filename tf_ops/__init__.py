"""C++/CUDA sources of the CARAFE reassembly op, compiled on first use (see keras_carafe.library)."""
