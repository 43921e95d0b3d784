"""Attribution methods: one module per family, all behind one registry (see ``registry``)."""
