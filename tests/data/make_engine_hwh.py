"""Writes ``mmfree_engine_zcu104.hwh`` and ``mmfree_engine_pynq_z2.hwh``: the hardware handoff
of an mmfree overlay, as Vivado 2024.2 lays it out, for the real-pynq tests
(``tests/test_board_real_pynq.py``).

The ZCU104 design is the streamed-tier decode engine on Zynq UltraScale+:

* ``mmfree_0`` = ``xilinx.com:hls:mmfree_engine:1.0``, the Vitis HLS top of a pass
  ``int mmfree_engine(int n, int mode, int slot, unsigned load_mask, unsigned store_mask,
  const float* x_in, float* state, logit_word_t* logits, uint64_t* top, ap_uint<128>* w0..w3)``:
  an ``s_axilite`` slave ``s_axi_control`` (ap_ctrl_hs, ap_return, the five scalars) and the
  m_axi masters ``m_axi_gmem_io`` (x_in, state), ``m_axi_gmem_out`` (logits, top) and
  ``m_axi_gmem_w0..3`` (one weight region each);
* ``ps`` = ``zynq_ultra_ps_e``: ``M_AXI_HPM0_FPD`` drives the control slave at 0xA0000000;
  as ``vivado_bd.tcl`` wires it for the ZCU104 streamed preset, weight bundle k reaches DDR
  through ``S_AXI_HP<k>_FPD`` and the two per-token I/O bundles share ``S_AXI_HPC1_FPD``
  (used without coherency) through one SmartConnect.

The PYNQ-Z2 design is the same engine with K = 2 64-bit weight ports on a Zynq-7000
(``processing_system7``): control on ``M_AXI_GP0`` at 0x40000000, ``gmem_w0``/``gmem_w1`` on
``S_AXI_HP0``/``S_AXI_HP2``, the I/O bundles on ``S_AXI_HP1``.

The register table below is what Vitis HLS emits for that top (0x00 CTRL, 0x04 GIER,
0x08 IP_IER, 0x0c IP_ISR, 0x10 ap_return + a reserved word, then two words per 32-bit
scalar: ``<arg>`` and one reserved, then three words per 64-bit pointer: ``<arg>_1`` low,
``<arg>_2`` high, one reserved; 8 address bits). It is written out literally
here, not computed by the project's code, so the tests compare two independent sources.

Run ``python tests/data/make_engine_hwh.py`` to regenerate the files (no dependencies).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

IP, PS = "mmfree_0", "ps"

# name, offset, access, description: the s_axi_control registers of the engine.
REGISTERS = [
    ("CTRL", 0x00, "read-write", "Control signals"),
    ("GIER", 0x04, "read-write", "Global Interrupt Enable Register"),
    ("IP_IER", 0x08, "read-write", "IP Interrupt Enable Register"),
    ("IP_ISR", 0x0C, "read-write", "IP Interrupt Status Register"),
    ("ap_return", 0x10, "read-only", "Data signal of ap_return"),
    ("n", 0x18, "write-only", "Data signal of n"),
    ("mode", 0x20, "write-only", "Data signal of mode"),
    ("slot", 0x28, "write-only", "Data signal of slot"),
    ("load_mask", 0x30, "write-only", "Data signal of load_mask"),
    ("store_mask", 0x38, "write-only", "Data signal of store_mask"),
    ("x_in_1", 0x40, "write-only", "Data signal of x_in"),
    ("x_in_2", 0x44, "write-only", "Data signal of x_in"),
    ("state_1", 0x4C, "write-only", "Data signal of state"),
    ("state_2", 0x50, "write-only", "Data signal of state"),
    ("logits_1", 0x58, "write-only", "Data signal of logits"),
    ("logits_2", 0x5C, "write-only", "Data signal of logits"),
    ("top_1", 0x64, "write-only", "Data signal of top"),
    ("top_2", 0x68, "write-only", "Data signal of top"),
    ("w0_1", 0x70, "write-only", "Data signal of w0"),
    ("w0_2", 0x74, "write-only", "Data signal of w0"),
    ("w1_1", 0x7C, "write-only", "Data signal of w1"),
    ("w1_2", 0x80, "write-only", "Data signal of w1"),
    ("w2_1", 0x88, "write-only", "Data signal of w2"),
    ("w2_2", 0x8C, "write-only", "Data signal of w2"),
    ("w3_1", 0x94, "write-only", "Data signal of w3"),
    ("w3_2", 0x98, "write-only", "Data signal of w3"),
]
#: address bits of the control slave (the last register, w3's reserved word, ends at 0xa0)
CONTROL_ADDR_BITS = 8
CTRL_FIELDS = [("AP_START", 0, 1, "read-write"), ("AP_DONE", 1, 1, "read-only"),
               ("AP_IDLE", 2, 1, "read-only"), ("AP_READY", 3, 1, "read-only"),
               ("RESERVED_1", 4, 3, "read-only"), ("AUTO_RESTART", 7, 1, "read-write"),
               ("RESERVED_2", 8, 1, "read-only"), ("INTERRUPT", 9, 1, "read-only"),
               ("RESERVED_3", 10, 22, "read-only")]
OTHER_FIELDS = {
    "GIER": [("Enable", 0, 1, "read-write"), ("RESERVED", 1, 31, "read-only")],
    "IP_IER": [("CHAN0_INT_EN", 0, 1, "read-write"), ("CHAN1_INT_EN", 1, 1, "read-write"),
               ("RESERVED_0", 2, 30, "read-only")],
    "IP_ISR": [("CHAN0_INT_ST", 0, 1, "read-only"), ("CHAN1_INT_ST", 1, 1, "read-only"),
               ("RESERVED_0", 2, 30, "read-only")],
}
# Per design: the PS, its control master, where each m_axi master goes (ps_ports.json:
# io_port_preference; boards.json: the streamed preset's ports), each PS slave port's address
# block interface and DDR window, and the PL clock (MHz, IO PLL divisors).
DESIGNS = {
    "zcu104": dict(
        name="mmfree_engine_zcu104", arch="zynquplus", board="xilinx.com:zcu104:part0:1.1",
        device="xczu7ev", package="ffvc1156", speed="-2", K=4, port_bits=128,
        ps=("zynq_ultra_ps_e", "xilinx.com:ip:zynq_ultra_ps_e:3.5", "3.5"),
        control="M_AXI_HPM0_FPD", base=0xA0000000,
        port_of={"m_axi_gmem_io": "S_AXI_HPC1_FPD", "m_axi_gmem_out": "S_AXI_HPC1_FPD",
                 "m_axi_gmem_w0": "S_AXI_HP0_FPD", "m_axi_gmem_w1": "S_AXI_HP1_FPD",
                 "m_axi_gmem_w2": "S_AXI_HP2_FPD", "m_axi_gmem_w3": "S_AXI_HP3_FPD"},
        slaves={"S_AXI_HPC1_FPD": ("SAXIGP1", "HPC1_DDR_LOW", 0x7FFFFFFF),
                "S_AXI_HP0_FPD": ("SAXIGP2", "HP0_DDR_LOW", 0x7FFFFFFF),
                "S_AXI_HP1_FPD": ("SAXIGP3", "HP1_DDR_LOW", 0x7FFFFFFF),
                "S_AXI_HP2_FPD": ("SAXIGP4", "HP2_DDR_LOW", 0x7FFFFFFF),
                "S_AXI_HP3_FPD": ("SAXIGP5", "HP3_DDR_LOW", 0x7FFFFFFF)},
        clock=(249.997498, 6, 1)),
    "pynq-z2": dict(
        name="mmfree_engine_pynq_z2", arch="zynq", board="tul.com.tw:pynq-z2:part0:1.0",
        device="7z020", package="clg400", speed="-1", K=2, port_bits=64,
        ps=("processing_system7", "xilinx.com:ip:processing_system7:5.5", "5.5"),
        control="M_AXI_GP0", base=0x40000000,
        port_of={"m_axi_gmem_io": "S_AXI_HP1", "m_axi_gmem_out": "S_AXI_HP1",
                 "m_axi_gmem_w0": "S_AXI_HP0", "m_axi_gmem_w1": "S_AXI_HP2"},
        slaves={"S_AXI_HP0": ("S_AXI_HP0", "HP0_DDR_LOWOCM", 0x1FFFFFFF),
                "S_AXI_HP1": ("S_AXI_HP1", "HP1_DDR_LOWOCM", 0x1FFFFFFF),
                "S_AXI_HP2": ("S_AXI_HP2", "HP2_DDR_LOWOCM", 0x1FFFFFFF)},
        clock=(125.0, 8, 1)),
}

# AXI signals (logical name, direction seen from the manager, width; 0 = data width).
AXI_LITE = [("AWADDR", "O", CONTROL_ADDR_BITS), ("AWVALID", "O", 1), ("AWREADY", "I", 1), ("WDATA", "O", 32),
            ("WSTRB", "O", 4), ("WVALID", "O", 1), ("WREADY", "I", 1), ("BRESP", "I", 2),
            ("BVALID", "I", 1), ("BREADY", "O", 1), ("ARADDR", "O", CONTROL_ADDR_BITS), ("ARVALID", "O", 1),
            ("ARREADY", "I", 1), ("RDATA", "I", 32), ("RRESP", "I", 2), ("RVALID", "I", 1),
            ("RREADY", "O", 1)]
AXI_FULL = [("AWADDR", "O", 64), ("AWLEN", "O", 8), ("AWSIZE", "O", 3), ("AWBURST", "O", 2),
            ("AWCACHE", "O", 4), ("AWPROT", "O", 3), ("AWVALID", "O", 1), ("AWREADY", "I", 1),
            ("WDATA", "O", 0), ("WSTRB", "O", -8), ("WLAST", "O", 1), ("WVALID", "O", 1),
            ("WREADY", "I", 1), ("BRESP", "I", 2), ("BVALID", "I", 1), ("BREADY", "O", 1),
            ("ARADDR", "O", 64), ("ARLEN", "O", 8), ("ARSIZE", "O", 3), ("ARBURST", "O", 2),
            ("ARCACHE", "O", 4), ("ARPROT", "O", 3), ("ARVALID", "O", 1), ("ARREADY", "I", 1),
            ("RDATA", "I", 0), ("RRESP", "I", 2), ("RLAST", "I", 1), ("RVALID", "I", 1),
            ("RREADY", "O", 1)]


def _attrs(**kw) -> str:
    return " ".join(f"{k}={quoteattr(str(v))}" for k, v in kw.items())


def _width(w: int, data_bits: int) -> int:
    return data_bits if w == 0 else (data_bits // 8 if w == -8 else w)


def _register(name, offset, access, desc) -> list[str]:
    out = [f'            <REGISTER NAME="{name}">']
    for k, v in (("DESCRIPTION", desc), ("ADDRESS_OFFSET", offset), ("SIZE", 32),
                 ("ACCESS", access), ("IS_ENABLED", "true"), ("RESET_VALUE", 0)):
        out.append(f'              <PROPERTY {_attrs(NAME=k, VALUE=v)}/>')
    if name == "CTRL":
        fields = CTRL_FIELDS
    elif name in OTHER_FIELDS:
        fields = OTHER_FIELDS[name]
    else:
        arg = name.rsplit("_", 1)[0] if name[-2:] in ("_1", "_2") else name
        lo = 32 if name.endswith("_2") else 0
        fields = [(arg, 0, 32, access)]
        desc = f"Bit {lo + 31} to {lo} of {arg}"
    out.append("              <FIELDS>")
    for fname, bit, width, faccess in fields:
        out.append(f'                <FIELD NAME="{fname}">')
        fdesc = f"Control signal Register for '{fname.lower()}'." if name == "CTRL" else desc
        for k, v in (("DESCRIPTION", fdesc), ("ADDRESS_OFFSET", bit), ("ACCESS", faccess),
                     ("BIT_OFFSET", bit), ("BIT_WIDTH", width)):
            out.append(f'                  <PROPERTY {_attrs(NAME=k, VALUE=v)}/>')
        out.append("                </FIELD>")
    out.append("              </FIELDS>")
    out.append("            </REGISTER>")
    return out


class Net:
    """Physical ports of each module and their connections, collected before writing."""

    def __init__(self):
        self.ports: dict[str, list] = {}

    def bus(self, a: str, a_itf: str, b: str, b_itf: str, signals, data_bits: int, lower_b: bool):
        """Connect manager interface a.a_itf to subordinate b.b_itf, signal by signal."""
        for logical, direction, w in signals:
            width = _width(w, data_bits)
            pa = f"{a_itf}_{logical}"
            pb = f"{b_itf}_{logical.lower() if lower_b else logical}"
            sig = f"{a}_{a_itf}_{logical}"
            back = "I" if direction == "O" else "O"
            self.ports.setdefault(a, []).append((pa, direction, width, sig, b, pb))
            self.ports.setdefault(b, []).append((pb, back, width, sig, a, pa))

    def lines(self, module: str) -> list[str]:
        out = ["      <PORTS>"]
        for name, d, width, sig, peer, peer_port in self.ports.get(module, []):
            rng = {"LEFT": width - 1, "RIGHT": 0} if width > 1 else {}
            out.append(f'        <PORT {_attrs(DIR=d, **rng, NAME=name, SIGIS="undef", SIGNAME=sig)}>')
            out.append("          <CONNECTIONS>")
            out.append(f'            <CONNECTION {_attrs(INSTANCE=peer, PORT=peer_port)}/>')
            out.append("          </CONNECTIONS>")
            out.append("        </PORT>")
        out.append("      </PORTS>")
        return out


def _businterface(name: str, kind: str, busname: str, signals, data_bits: int, params: dict,
                  lower: bool = False) -> list[str]:
    out = [f'        <BUSINTERFACE {_attrs(BUSNAME=busname, DATAWIDTH=data_bits, NAME=name, TYPE=kind, VLNV="xilinx.com:interface:aximm:1.0")}>']
    for k, v in params.items():
        out.append(f'          <PARAMETER {_attrs(NAME=k, VALUE=v)}/>')
    out.append("          <PORTMAPS>")
    for logical, _d, _w in signals:
        phys = f"{name}_{logical.lower() if lower else logical}"
        out.append(f'            <PORTMAP {_attrs(LOGICAL=logical, PHYSICAL=phys)}/>')
    out.append("          </PORTMAPS>")
    out.append("        </BUSINTERFACE>")
    return out


def _ps_parameters(D: dict) -> dict:
    mhz, d0, d1 = D["clock"]
    params = {}
    if D["ps"][0] == "zynq_ultra_ps_e":
        for i in range(4):
            f, a, b = (mhz, d0, d1) if i == 0 else (99.999001, 15, 1)
            params.update({f"PSU__FPGA_PL{i}_ENABLE": int(i == 0),
                           f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0": a,
                           f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1": b,
                           f"PSU__CRL_APB__PL{i}_REF_CTRL__SRCSEL": "IOPLL",
                           f"PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ": f,
                           f"PSU__CRL_APB__PL{i}_REF_CTRL__FREQMHZ": round(f)})
        params.update({"PSU__USE__M_AXI_GP0": 1, "C_MAXIGP0_DATA_WIDTH": 128,
                       "PSU__USE__S_AXI_GP0": 0, "PSU__USE__S_AXI_ACP": 0})   # no HPC0, no ACP
        for hp, (itf, _block, _high) in D["slaves"].items():
            gp = int(itf[len("SAXIGP"):])
            params[f"PSU__USE__S_AXI_GP{gp}"] = 1
            params[f"C_SAXIGP{gp}_DATA_WIDTH"] = D["port_bits"]
    else:
        for i in range(4):
            f, a, b = (mhz, d0, d1) if i == 0 else (100.0, 10, 1)
            params.update({f"PCW_FPGA_FCLK{i}_ENABLE": int(i == 0), f"PCW_EN_CLK{i}_PORT": int(i == 0),
                           f"PCW_FCLK{i}_PERIPHERAL_DIVISOR0": a, f"PCW_FCLK{i}_PERIPHERAL_DIVISOR1": b,
                           f"PCW_FCLK{i}_PERIPHERAL_CLKSRC": "IO PLL",
                           f"PCW_FPGA{i}_PERIPHERAL_FREQMHZ": round(f),
                           f"PCW_ACT_FPGA{i}_PERIPHERAL_FREQMHZ": f"{f:.6f}"})
        params.update({"PCW_USE_M_AXI_GP0": 1, "PCW_USE_S_AXI_ACP": 0})
        for hp in D["slaves"]:
            n = hp[-1]
            params[f"PCW_USE_S_AXI_HP{n}"] = 1
            params[f"PCW_S_AXI_HP{n}_DATA_WIDTH"] = D["port_bits"]
    return params


def build(board: str) -> str:
    D = DESIGNS[board]
    NAME, K, PORT_BITS = D["name"], D["K"], D["port_bits"]
    CONTROL_BASE, CONTROL_HIGH = D["base"], D["base"] + 0xFFFF
    PORT_OF, CONTROL = D["port_of"], D["control"]
    MASTERS = sorted(PORT_OF)
    registers = [r for r in REGISTERS if not (r[0][0] == "w" and int(r[0][1]) >= K)]
    prefix = {hp: block.split("_")[0] for hp, (_i, block, _h) in D["slaves"].items()}
    net = Net()
    # Control: the PS master → engine control slave (protocol conversion is inside the PS here).
    net.bus(PS, CONTROL, IP, "s_axi_control", AXI_LITE, 32, lower_b=False)
    # Masters: one PS port each, or a SmartConnect in front of a port two masters share.
    by_port: dict[str, list[str]] = {}
    for m in MASTERS:
        by_port.setdefault(PORT_OF[m], []).append(m)
    smartconnects = {}
    for hp, masters in by_port.items():
        if len(masters) == 1:
            net.bus(IP, masters[0], PS, hp, AXI_FULL, PORT_BITS, lower_b=False)
        else:
            smc = f"smc_{prefix[hp].lower()}"
            smartconnects[smc] = (hp, masters)
            for j, m in enumerate(masters):
                net.bus(IP, m, smc, f"S{j:02d}_AXI", AXI_FULL, PORT_BITS, lower_b=True)
            net.bus(smc, "M00_AXI", PS, hp, AXI_FULL, PORT_BITS, lower_b=False)
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="no" ?>',
           '<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="Fri Dec  4 12:00:00 2026" VIVADOVERSION="2024.2">',
           "",
           f'  <SYSTEMINFO {_attrs(ARCH=D["arch"], BOARD=D["board"], DEVICE=D["device"], NAME=NAME, PACKAGE=D["package"], SPEEDGRADE=D["speed"])}/>',
           "", "  <EXTERNALPORTS/>", "", "  <EXTERNALINTERFACES/>", "", "  <MODULES>"]

    # ---- the engine
    out.append(f'    <MODULE {_attrs(COREREVISION=1, FULLNAME="/" + IP, HWVERSION="1.0", INSTANCE=IP, IPTYPE="PERIPHERAL", IS_ENABLE=1, MODCLASS="PERIPHERAL", MODTYPE="mmfree_engine", VLNV="xilinx.com:hls:mmfree_engine:1.0")}>')
    out += ["      <DOCUMENTS/>", "      <ADDRESSBLOCKS>",
            '        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="s_axi_control" NAME="Reg" RANGE="65536" USAGE="register">',
            "          <REGISTERS>"]
    for reg in registers:
        out += _register(*reg)
    out += ["          </REGISTERS>", "        </ADDRESSBLOCK>", "      </ADDRESSBLOCKS>", "      <PARAMETERS>",
            f'        <PARAMETER NAME="C_S_AXI_CONTROL_ADDR_WIDTH" VALUE="{CONTROL_ADDR_BITS}"/>',
            '        <PARAMETER NAME="C_S_AXI_CONTROL_DATA_WIDTH" VALUE="32"/>']
    for m in MASTERS:
        g = m[len("m_axi_"):].upper()
        out += [f'        <PARAMETER NAME="C_M_AXI_{g}_ADDR_WIDTH" VALUE="64"/>',
                f'        <PARAMETER NAME="C_M_AXI_{g}_DATA_WIDTH" VALUE="{PORT_BITS}"/>',
                f'        <PARAMETER NAME="C_M_AXI_{g}_CACHE_VALUE" VALUE="&quot;0011&quot;"/>']
    out += [f'        <PARAMETER NAME="C_S_AXI_CONTROL_BASEADDR" VALUE="0x{CONTROL_BASE:08X}"/>',
            f'        <PARAMETER NAME="C_S_AXI_CONTROL_HIGHADDR" VALUE="0x{CONTROL_HIGH:08X}"/>',
            f'        <PARAMETER NAME="Component_Name" VALUE="{NAME}_mmfree_0_0"/>',
            "      </PARAMETERS>"]
    out += net.lines(IP)
    out.append("      <BUSINTERFACES>")
    freq_hz = round(D["clock"][0] * 1e6)
    out += _businterface("s_axi_control", "SLAVE", f"{PS}_{CONTROL}", AXI_LITE, 32,
                         {"ADDR_WIDTH": CONTROL_ADDR_BITS, "DATA_WIDTH": 32, "PROTOCOL": "AXI4LITE", "FREQ_HZ": freq_hz})
    for m in MASTERS:
        out += _businterface(m, "MASTER", f"{IP}_{m}", AXI_FULL, PORT_BITS,
                             {"ADDR_WIDTH": 64, "DATA_WIDTH": PORT_BITS, "PROTOCOL": "AXI4",
                              "MAX_BURST_LENGTH": 16, "NUM_READ_OUTSTANDING": 16,
                              "NUM_WRITE_OUTSTANDING": 16, "FREQ_HZ": freq_hz})
    out.append("      </BUSINTERFACES>")
    out.append("      <MEMORYMAP>")
    for m in MASTERS:
        hp = PORT_OF[m]
        _itf, block, high = D["slaves"][hp]
        out.append(f'        <MEMRANGE {_attrs(ADDRESSBLOCK=block, BASENAME="C_BASEADDR", BASEVALUE="0x00000000", HIGHNAME="C_HIGHADDR", HIGHVALUE=f"0x{high:08X}", INSTANCE=PS, IS_DATA="TRUE", IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE=m, MEMTYPE="MEMORY", SLAVEBUSINTERFACE=hp)}/>')
    out += ["      </MEMORYMAP>", "      <PERIPHERALS>", f'        <PERIPHERAL INSTANCE="{PS}"/>',
            "      </PERIPHERALS>", "    </MODULE>"]

    # ---- SmartConnects (a shared HP port)
    for smc, (hp, masters) in smartconnects.items():
        out.append(f'    <MODULE {_attrs(BD=f"{NAME}_{smc}_0", BDTYPE="SBD", COREREVISION=25, DRIVERMODE="CORE", FULLNAME="/" + smc, HWVERSION="1.0", INSTANCE=smc, IPTYPE="BUS", IS_ENABLE=1, MODCLASS="BUS", MODTYPE="smartconnect", VLNV="xilinx.com:ip:smartconnect:1.0")}>')
        out += ["      <DOCUMENTS/>", "      <PARAMETERS>",
                f'        <PARAMETER NAME="NUM_SI" VALUE="{len(masters)}"/>',
                '        <PARAMETER NAME="NUM_MI" VALUE="1"/>', "      </PARAMETERS>"]
        out += net.lines(smc)
        out.append("      <BUSINTERFACES>")
        for j, m in enumerate(masters):
            out += _businterface(f"S{j:02d}_AXI", "SLAVE", f"{IP}_{m}", AXI_FULL, PORT_BITS,
                                 {"DATA_WIDTH": PORT_BITS, "PROTOCOL": "AXI4"}, lower=True)
        out += _businterface("M00_AXI", "MASTER", f"{smc}_M00_AXI", AXI_FULL, PORT_BITS,
                             {"DATA_WIDTH": PORT_BITS, "PROTOCOL": "AXI4"}, lower=False)
        out += ["      </BUSINTERFACES>", "    </MODULE>"]

    # ---- the processing system
    modtype, vlnv, hwversion = D["ps"]
    out.append(f'    <MODULE {_attrs(CONFIGURABLE="TRUE", COREREVISION=5, FULLNAME="/" + PS, HWVERSION=hwversion, INSTANCE=PS, IPTYPE="PERIPHERAL", IS_ENABLE=1, IS_PL="FALSE", MODTYPE=modtype, VLNV=vlnv)}>')
    out.append("      <DOCUMENTS/>")
    for hp, (itf, block, high) in D["slaves"].items():
        out += ["      <ADDRESSBLOCKS>",
                f'        <ADDRESSBLOCK {_attrs(ACCESS="", INTERFACE=itf, NAME=block, RANGE=f"0x{high + 1:X}", USAGE="memory")}/>',
                "      </ADDRESSBLOCKS>"]
    out.append("      <PARAMETERS>")
    ps_params = _ps_parameters(D)
    for k, v in ps_params.items():
        out.append(f'        <PARAMETER {_attrs(NAME=k, VALUE=v)}/>')
    out.append("      </PARAMETERS>")
    out += net.lines(PS)
    out.append("      <BUSINTERFACES>")
    out += _businterface(CONTROL, "MASTER", f"{PS}_{CONTROL}", AXI_LITE, 32,
                         {"DATA_WIDTH": 32, "PROTOCOL": "AXI4LITE"})
    for hp, masters in by_port.items():
        src = f"{IP}_{masters[0]}" if len(masters) == 1 else f"smc_{prefix[hp].lower()}_M00_AXI"
        out += _businterface(hp, "SLAVE", src, AXI_FULL, PORT_BITS,
                             {"DATA_WIDTH": PORT_BITS, "PROTOCOL": "AXI4"})
    out.append("      </BUSINTERFACES>")
    out += ["      <MEMORYMAP>",
            f'        <MEMRANGE {_attrs(ADDRESSBLOCK="Reg", BASENAME="C_S_AXI_CONTROL_BASEADDR", BASEVALUE=f"0x{CONTROL_BASE:08X}", HIGHNAME="C_S_AXI_CONTROL_HIGHADDR", HIGHVALUE=f"0x{CONTROL_HIGH:08X}", INSTANCE=IP, IS_DATA="TRUE", IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE=CONTROL, MEMTYPE="REGISTER", SLAVEBUSINTERFACE="s_axi_control")}/>',
            "      </MEMORYMAP>", "    </MODULE>", "  </MODULES>", "", "</EDKSYSTEM>", ""]
    return "\n".join(out)


if __name__ == "__main__":
    for board, design in DESIGNS.items():
        path = Path(__file__).resolve().parent / f"{design['name']}.hwh"
        path.write_text(build(board))
        print(f"wrote {path}")
