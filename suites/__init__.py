"""What a healthy cluster network means: probing, expectations, the pytest plugin and the test modules."""
