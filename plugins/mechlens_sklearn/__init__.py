"""Reducers (cell types, NMF, PCA), reduced models and cell-type characterisation."""
