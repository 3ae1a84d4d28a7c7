"""Loihi 2 limits, each number defined once, with its source.

Every stage that must respect the chip's arithmetic or capacity (the models' QAT, the
quantizer, the integer reference, the emulator, the resource report, the Lava lowering)
imports its limits from here. Sources: Lava's bit-accurate process models (lava-nc
0.10.0, paths under ``lava/proc/``), which define the fixed-point semantics matched spike
for spike; and Intel's published figures (Loihi 2 Technology Brief, 2021; Orchard et al.,
"Efficient Neuromorphic Signal Processing with Loihi 2", SiPS 2021).
"""

# -- arithmetic (lava/proc/lif/models.py, AbstractPyLifModelFixed and PyLifModelBitAcc)
STATE_BITS = 24                     # uv_bitwidth = 24: u and v are signed 24-bit
STATE_MAX = 2 ** (STATE_BITS - 1)   # max_uv_val; u wraps modulo 2^24, v saturates at ±(2^23 - 1)
DECAY_SHIFT = 12                    # decay_shift = 12: x * (4096 - d) >> 12
DECAY_UNITY = 2 ** DECAY_SHIFT      # decay_unity
DECAY_MAX = DECAY_UNITY - 1         # du, dv: unsigned 12-bit
VTH_SHIFT = 6                       # vth_shift = 6: effective threshold vth << 6
VTH_MAX = 2 ** 17 - 1               # vth: 17-bit mantissa, so vth << 6 stays within 23 bits

# -- synapses (lava/proc/dense/models.py, PyDenseModelBitAcc; lava/utils/weightutils.py)
WEIGHT_BITS = 8                     # weight mantissas: 8 bits, sign mode shared by the matrix
MANTISSA_MAX = 2 ** (WEIGHT_BITS - 1) - 1   # 127: mixed-sign matrices hold |w| <= 127
INHIBITORY_MANTISSA_MAX = 2 ** WEIGHT_BITS - 1   # 255: an all-inhibitory matrix's magnitudes
INPUT_BITS = 16                     # a_out precision=16: the dendritic input a LIF receives
INPUT_LIMIT = 2 ** (INPUT_BITS - 1)         # |a_in| must stay below 2^15 on the chip
# The weight exponent this compiler emits; Lava's simulator shifts by any integer, and the
# hardware range is checked by lava-loihi's compiler, which is not public.
WEIGHT_EXP_RANGE = (-16, 15)
DELAY_BITS = 6                      # DelayDense delays 0..63 (lava/proc/dense/process.py)
DELAY_MAX = 2 ** DELAY_BITS - 2     # 62: one step of the 63 is the synapse's own

# -- graded spikes, products, accumulators (lava/proc/graded/models.py,
#    lava/proc/prodneuron/models.py: ports and state at precision=24, products in int32)
GRADED_MESSAGE_BITS = 24            # graded spike payloads: signed 24-bit
PAYLOAD_MAX = 2 ** (GRADED_MESSAGE_BITS - 1)
PROD_BITS = 32                      # ProdNeuron multiplies a_in1 * a_in2 in int32

# -- capacity (Intel Loihi 2 Technology Brief, 2021; Orchard et al. 2021)
CORES_PER_CHIP = 128                # neurocores per chip
NEURONS_PER_CHIP = 1_048_576        # "1 million neurons"
NEURONS_PER_CORE = NEURONS_PER_CHIP // CORES_PER_CHIP   # 8192
SYNAPTIC_BITS_PER_CORE = 128 * 1024 * 8                 # 128 KB of synaptic memory per core
SYNAPSES_PER_CHIP = 120_000_000     # "120 million synapses"
