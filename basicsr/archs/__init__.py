"""Network architectures. Components register in ``ARCH_REGISTRY`` and are imported lazily on
the first lookup, so importing this package imports no architecture module. Build one with
``build(ARCH_REGISTRY, {'type': 'EFNet', ...})`` (:func:`basicsr.utils.registry.build`)."""
