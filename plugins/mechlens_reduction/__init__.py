"""The reducer stage: cell types, NMF and PCA reducers, reduced models and cell-type characterisation
(formerly ``mechlens_sklearn``)."""
