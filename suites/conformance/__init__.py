"""Conformance checks: does the cluster network keep the promises Kubernetes makes?"""
