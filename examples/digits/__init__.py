"""scikit-learn's 8x8 digits: the data sets, models and modules that specs/digits*.mdl and specs/pipeline.mdl bind."""
