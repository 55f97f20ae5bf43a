"""ipr-lightning: IPR (Iterative step-level Process Refinement) agent training on Lightning."""

import logging as _logging

# On AVX512-BF16 CPUs, importing bitsandbytes (peft does) logs that an optional CPU kernel could
# not be fetched from the hub. We never use that kernel (see models._disable_bnb_cpu_packing),
# and the stray line would spoil one-line error messages. Installed here, before any submodule
# can import peft.
_logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(
    lambda record: "kernels-community" not in record.getMessage()
)

__version__ = "0.1.0"
