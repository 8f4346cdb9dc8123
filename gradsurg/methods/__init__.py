"""Gradient-surgery methods: each turns the task gradients (most often only their T×T Gram
matrix) into the combined update.

``__all__`` lists every registered method class (a test checks it against the registry), the
kind base classes and the registry's functions.
"""

from .aligned_mtl import AlignedMTL
from .base import DoubleBackwardMethod, GramMethod, LossWeighting, MatrixMethod, Method
from .cagrad import CAGrad
from .config import ConFIG
from .cosmos import COSMOS
from .cosreg import CosReg
from .cr_mogm import CRMOGM
from .db_mtl import DBMTL
from .dualproj import DualProj
from .dwa import DWA
from .excess_mtl import ExcessMTL
from .fairgrad import FairGrad
from .famo import FAMO
from .gls import GLS
from .graddrop import GradDrop
from .gradnorm import GradNorm
from .gradvac import GradVac
from .imtl_g import IMTLG
from .imtl_l import IMTLL
from .mean import Mean
from .mgda import MGDA
from .moco import MoCo
from .modo import MoDo
from .nash_mtl import NashMTL
from .pbi import PBI
from .pcgrad import PCGrad
from .registry import available_methods, build_method, get_method, method_class, resolve_method
from .rlw import RLW
from .sdmgrad import SDMGrad
from .stch import STCH
from .sum import Sum
from .upgrad import UPGrad
from .uw import UW

__all__ = [
    "COSMOS",
    "CRMOGM",
    "DBMTL",
    "DWA",
    "FAMO",
    "GLS",
    "IMTLG",
    "IMTLL",
    "MGDA",
    "PBI",
    "RLW",
    "STCH",
    "UW",
    "AlignedMTL",
    "CAGrad",
    "ConFIG",
    "CosReg",
    "DoubleBackwardMethod",
    "DualProj",
    "ExcessMTL",
    "FairGrad",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GramMethod",
    "LossWeighting",
    "MatrixMethod",
    "Mean",
    "Method",
    "MoCo",
    "MoDo",
    "NashMTL",
    "PCGrad",
    "SDMGrad",
    "Sum",
    "UPGrad",
    "available_methods",
    "build_method",
    "get_method",
    "method_class",
    "resolve_method",
]
