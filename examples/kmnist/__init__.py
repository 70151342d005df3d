"""KMNIST-1 of the ESEC/FSE 2020 artifact: the model, its ten modules and the test split."""
