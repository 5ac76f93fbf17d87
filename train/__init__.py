"""``python -m train``: train the triplet, contrastive and autoencoder methods on seen classes.

Model selection uses held-out *seen* classes only; the unseen classes are evaluated every epoch
as a report (the curve shows what selecting on them, as the reference study did, would hide).
"""
