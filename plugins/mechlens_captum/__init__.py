"""Captum-based and exact integrated-gradients attribution to hidden units."""
