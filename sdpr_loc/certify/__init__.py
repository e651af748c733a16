"""The certifiable differentiable layer: QCQP -> local solve -> certificate (SDP fallback) -> KKT backward."""
from .autotight import find_constraints
from .certificate import Certificate, certify
from .layer import SDPRLayer
from .polymin import PolyMinLayer
from .qcqp import QCQP
from .sdp import SDPRelaxation

__all__ = ["QCQP", "Certificate", "certify", "SDPRLayer", "SDPRelaxation", "PolyMinLayer",
           "find_constraints"]
