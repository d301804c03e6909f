"""Datasets: a synthetic temporal video-QA generator for offline accuracy checks."""

from .synthetic import QUESTION_TYPES, Scene, answer_from_scene, make_scene, render_scene, vocabulary, write_dataset

__all__ = ["QUESTION_TYPES", "Scene", "answer_from_scene", "make_scene", "render_scene", "vocabulary", "write_dataset"]
