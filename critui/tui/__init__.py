"""The Textual app: a dashboard of runs, forms to start them, and live charts of each.

Lives on the managing side: it imports from ``critui.runs``, ``critui.config``,
``critui.plugins`` and ``critui.events``, never from ``critui.train``.
"""
