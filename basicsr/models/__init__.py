"""Models: the training logic (networks + losses + optimisers + the step), registered by name.

The engine builds them with ``build(MODEL_REGISTRY, opt, type_key='model_type', ctx=ctx)``
(:func:`basicsr.engine.run_setup.build_model`).
"""
