"""EDM network pickles, read safely and run by sde-bench's own implementation.

Karras et al. (2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
NeurIPS) publish their networks as Python pickles that embed the source code of the network
classes; a plain ``pickle.load`` executes that code. This package never does:

* :mod:`.unpickler`: a restricted :class:`pickle.Unpickler` that allows only the handful of
  globals such a file needs, turns EDM's persistent objects into inert data records (the
  embedded ``module_src`` stays an unexecuted string), reads each tensor storage with
  ``torch.load(weights_only=True)``, and refuses everything else in one line. It extracts the
  preconditioner's class, constructor arguments and attributes and the state dict.
* :mod:`.layers` and :mod:`.networks`: independent implementations of EDM's two UNet families,
  ``SongUNet`` (DDPM++ and NCSN++ of Song et al. 2021, "Score-Based Generative Modeling through
  Stochastic Differential Equations", ICLR) and ``DhariwalUNet`` (ADM of Dhariwal & Nichol 2021,
  "Diffusion Models Beat GANs on Image Synthesis", NeurIPS), with EDM's parameter names.
* :mod:`.precond`: the VP, VE and EDM preconditioners, ``D(x; σ) = c_skip x + c_out F(c_in x;
  c_noise)`` (Karras et al. 2022, Table 1).
* :mod:`.loader`: :func:`load_edm`, which builds the network from the pickled constructor
  arguments and loads the weights strictly.

Dtypes follow the input: float32 as in EDM, or entirely float64 for a float64 network and
float64 inputs; ``use_fp16`` runs the UNet in float16 on CUDA only, as in EDM.
"""

from __future__ import annotations

from bench_plugins.score_models.edm.loader import build_network, load_edm
from bench_plugins.score_models.edm.networks import DhariwalUNet, SongUNet
from bench_plugins.score_models.edm.precond import EDMPrecond, VEPrecond, VPPrecond
from bench_plugins.score_models.edm.unpickler import (
    EdmNetworkRecord,
    EdmUnpickler,
    read_edm_network,
    unpickle_edm,
)

__all__ = [
    "DhariwalUNet",
    "EDMPrecond",
    "EdmNetworkRecord",
    "EdmUnpickler",
    "SongUNet",
    "VEPrecond",
    "VPPrecond",
    "build_network",
    "load_edm",
    "read_edm_network",
    "unpickle_edm",
]
