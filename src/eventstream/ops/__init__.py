"""The operator's view: every metric declared once (``metrics``), the conservation audit
(``audit``, with its walk over the contents in ``problems``) and the pruning of the
store's history (``retention``)."""
