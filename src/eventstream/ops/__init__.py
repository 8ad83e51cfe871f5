"""The operator's view: every metric declared once (``metrics``), the conservation audit
(``audit``) and the pruning of the store's history (``retention``)."""
