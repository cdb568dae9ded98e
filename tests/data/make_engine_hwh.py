"""Writes ``mmfree_engine_zcu104.hwh``: the hardware handoff of an mmfree overlay, as Vivado
2024.2 lays it out, for the real-pynq tests (``tests/test_board_real_pynq.py``).

The design is the streamed-tier decode engine on a ZCU104 (Zynq UltraScale+):

* ``mmfree_0`` = ``xilinx.com:hls:mmfree_engine:1.0``, the Vitis HLS top
  ``int mmfree_engine(float* x_in, float* state, float* logits, ap_uint<128>* w0..w3)``:
  an ``s_axilite`` slave ``s_axi_control`` (ap_ctrl_hs, ap_return) and the m_axi masters
  ``m_axi_gmem_io`` (x_in, state), ``m_axi_gmem_out`` (logits) and ``m_axi_gmem_w0..3``
  (one weight region each);
* ``ps`` = ``zynq_ultra_ps_e``: ``M_AXI_HPM0_FPD`` drives the control slave at 0xA0000000;
  as ``vivado_bd.tcl`` wires it for the ZCU104 streamed preset, weight bundle k reaches DDR
  through ``S_AXI_HP<k>_FPD`` and the two per-token I/O bundles share ``S_AXI_HPC1_FPD``
  (used without coherency) through one SmartConnect.

The register table below is what Vitis HLS emits for that top (0x00 CTRL, 0x04 GIER,
0x08 IP_IER, 0x0c IP_ISR, 0x10 ap_return + a reserved word, then three words per 64-bit
pointer: ``<arg>_1`` low, ``<arg>_2`` high, one reserved). It is written out literally
here, not computed by the project's code, so the tests compare two independent sources.

Run ``python tests/data/make_engine_hwh.py`` to regenerate the file (no dependencies).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

NAME = "mmfree_engine_zcu104"
IP, PS = "mmfree_0", "ps"
CONTROL_BASE, CONTROL_HIGH = 0xA0000000, 0xA000FFFF
PORT_BITS = 128

# name, offset, access, description: the s_axi_control registers of the engine.
REGISTERS = [
    ("CTRL", 0x00, "read-write", "Control signals"),
    ("GIER", 0x04, "read-write", "Global Interrupt Enable Register"),
    ("IP_IER", 0x08, "read-write", "IP Interrupt Enable Register"),
    ("IP_ISR", 0x0C, "read-write", "IP Interrupt Status Register"),
    ("ap_return", 0x10, "read-only", "Data signal of ap_return"),
    ("x_in_1", 0x18, "write-only", "Data signal of x_in"),
    ("x_in_2", 0x1C, "write-only", "Data signal of x_in"),
    ("state_1", 0x24, "write-only", "Data signal of state"),
    ("state_2", 0x28, "write-only", "Data signal of state"),
    ("logits_1", 0x30, "write-only", "Data signal of logits"),
    ("logits_2", 0x34, "write-only", "Data signal of logits"),
    ("w0_1", 0x3C, "write-only", "Data signal of w0"),
    ("w0_2", 0x40, "write-only", "Data signal of w0"),
    ("w1_1", 0x48, "write-only", "Data signal of w1"),
    ("w1_2", 0x4C, "write-only", "Data signal of w1"),
    ("w2_1", 0x54, "write-only", "Data signal of w2"),
    ("w2_2", 0x58, "write-only", "Data signal of w2"),
    ("w3_1", 0x60, "write-only", "Data signal of w3"),
    ("w3_2", 0x64, "write-only", "Data signal of w3"),
]
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
# m_axi master → PS slave port (ps_ports.json: io_port_preference; boards.json: zcu104 streamed ports).
PORT_OF = {"m_axi_gmem_io": "S_AXI_HPC1_FPD", "m_axi_gmem_out": "S_AXI_HPC1_FPD",
           "m_axi_gmem_w0": "S_AXI_HP0_FPD", "m_axi_gmem_w1": "S_AXI_HP1_FPD",
           "m_axi_gmem_w2": "S_AXI_HP2_FPD", "m_axi_gmem_w3": "S_AXI_HP3_FPD"}
MASTERS = sorted(PORT_OF)
# PS slave port → (its SAXIGP index, the DDR address blocks' prefix)
PS_SLAVES = {"S_AXI_HPC1_FPD": (1, "HPC1"), "S_AXI_HP0_FPD": (2, "HP0"), "S_AXI_HP1_FPD": (3, "HP1"),
             "S_AXI_HP2_FPD": (4, "HP2"), "S_AXI_HP3_FPD": (5, "HP3")}

# AXI signals (logical name, direction seen from the manager, width; 0 = data width).
AXI_LITE = [("AWADDR", "O", 7), ("AWVALID", "O", 1), ("AWREADY", "I", 1), ("WDATA", "O", 32),
            ("WSTRB", "O", 4), ("WVALID", "O", 1), ("WREADY", "I", 1), ("BRESP", "I", 2),
            ("BVALID", "I", 1), ("BREADY", "O", 1), ("ARADDR", "O", 7), ("ARVALID", "O", 1),
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


def build() -> str:
    net = Net()
    # Control: PS HPM0 → engine control slave (protocol conversion is inside the PS here).
    net.bus(PS, "M_AXI_HPM0_FPD", IP, "s_axi_control", AXI_LITE, 32, lower_b=False)
    # Masters: one PS port each, or a SmartConnect in front of a port two masters share.
    by_port: dict[str, list[str]] = {}
    for m in MASTERS:
        by_port.setdefault(PORT_OF[m], []).append(m)
    smartconnects = {}
    for hp, masters in by_port.items():
        if len(masters) == 1:
            net.bus(IP, masters[0], PS, hp, AXI_FULL, PORT_BITS, lower_b=False)
        else:
            smc = f"smc_{PS_SLAVES[hp][1].lower()}"
            smartconnects[smc] = (hp, masters)
            for j, m in enumerate(masters):
                net.bus(IP, m, smc, f"S{j:02d}_AXI", AXI_FULL, PORT_BITS, lower_b=True)
            net.bus(smc, "M00_AXI", PS, hp, AXI_FULL, PORT_BITS, lower_b=False)
    out = ['<?xml version="1.0" encoding="UTF-8" standalone="no" ?>',
           '<EDKSYSTEM EDWVERSION="1.2" TIMESTAMP="Fri Dec  4 12:00:00 2026" VIVADOVERSION="2024.2">',
           "",
           f'  <SYSTEMINFO {_attrs(ARCH="zynquplus", BOARD="xilinx.com:zcu104:part0:1.1", DEVICE="xczu7ev", NAME=NAME, PACKAGE="ffvc1156", SPEEDGRADE="-2")}/>',
           "", "  <EXTERNALPORTS/>", "", "  <EXTERNALINTERFACES/>", "", "  <MODULES>"]

    # ---- the engine
    out.append(f'    <MODULE {_attrs(COREREVISION=1, FULLNAME="/" + IP, HWVERSION="1.0", INSTANCE=IP, IPTYPE="PERIPHERAL", IS_ENABLE=1, MODCLASS="PERIPHERAL", MODTYPE="mmfree_engine", VLNV="xilinx.com:hls:mmfree_engine:1.0")}>')
    out += ["      <DOCUMENTS/>", "      <ADDRESSBLOCKS>",
            '        <ADDRESSBLOCK ACCESS="read-write" INTERFACE="s_axi_control" NAME="Reg" RANGE="65536" USAGE="register">',
            "          <REGISTERS>"]
    for reg in REGISTERS:
        out += _register(*reg)
    out += ["          </REGISTERS>", "        </ADDRESSBLOCK>", "      </ADDRESSBLOCKS>", "      <PARAMETERS>",
            '        <PARAMETER NAME="C_S_AXI_CONTROL_ADDR_WIDTH" VALUE="7"/>',
            '        <PARAMETER NAME="C_S_AXI_CONTROL_DATA_WIDTH" VALUE="32"/>']
    for m in MASTERS:
        g = m[len("m_axi_"):].upper()
        out += [f'        <PARAMETER NAME="C_M_AXI_{g}_ADDR_WIDTH" VALUE="64"/>',
                f'        <PARAMETER NAME="C_M_AXI_{g}_DATA_WIDTH" VALUE="{PORT_BITS}"/>',
                f'        <PARAMETER NAME="C_M_AXI_{g}_CACHE_VALUE" VALUE="&quot;0011&quot;"/>']
    out += [f'        <PARAMETER NAME="C_S_AXI_CONTROL_BASEADDR" VALUE="0x{CONTROL_BASE:08X}"/>',
            f'        <PARAMETER NAME="C_S_AXI_CONTROL_HIGHADDR" VALUE="0x{CONTROL_HIGH:08X}"/>',
            '        <PARAMETER NAME="Component_Name" VALUE="mmfree_engine_zcu104_mmfree_0_0"/>',
            "      </PARAMETERS>"]
    out += net.lines(IP)
    out.append("      <BUSINTERFACES>")
    out += _businterface("s_axi_control", "SLAVE", f"{PS}_M_AXI_HPM0_FPD", AXI_LITE, 32,
                         {"ADDR_WIDTH": 7, "DATA_WIDTH": 32, "PROTOCOL": "AXI4LITE", "FREQ_HZ": 249997498})
    for m in MASTERS:
        out += _businterface(m, "MASTER", f"{IP}_{m}", AXI_FULL, PORT_BITS,
                             {"ADDR_WIDTH": 64, "DATA_WIDTH": PORT_BITS, "PROTOCOL": "AXI4",
                              "MAX_BURST_LENGTH": 16, "NUM_READ_OUTSTANDING": 16,
                              "NUM_WRITE_OUTSTANDING": 16, "FREQ_HZ": 249997498})
    out.append("      </BUSINTERFACES>")
    out.append("      <MEMORYMAP>")
    for m in MASTERS:
        hp = PORT_OF[m]
        block = f"{PS_SLAVES[hp][1]}_DDR_LOW"
        out.append(f'        <MEMRANGE {_attrs(ADDRESSBLOCK=block, BASENAME="C_BASEADDR", BASEVALUE="0x00000000", HIGHNAME="C_HIGHADDR", HIGHVALUE="0x7FFFFFFF", INSTANCE=PS, IS_DATA="TRUE", IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE=m, MEMTYPE="MEMORY", SLAVEBUSINTERFACE=hp)}/>')
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
    out.append(f'    <MODULE {_attrs(CONFIGURABLE="TRUE", COREREVISION=5, FULLNAME="/" + PS, HWVERSION="3.5", INSTANCE=PS, IPTYPE="PERIPHERAL", IS_ENABLE=1, IS_PL="FALSE", MODTYPE="zynq_ultra_ps_e", VLNV="xilinx.com:ip:zynq_ultra_ps_e:3.5")}>')
    out.append("      <DOCUMENTS/>")
    for hp, (gp, prefix) in PS_SLAVES.items():
        for block, rng in ((f"{prefix}_DDR_LOW", "0x80000000"), (f"{prefix}_DDR_HIGH", "0x800000000")):
            out += ["      <ADDRESSBLOCKS>",
                    f'        <ADDRESSBLOCK {_attrs(ACCESS="", INTERFACE=f"SAXIGP{gp}", NAME=block, RANGE=rng, USAGE="memory")}/>',
                    "      </ADDRESSBLOCKS>"]
    out.append("      <PARAMETERS>")
    ps_params = {"PSU__FPGA_PL0_ENABLE": 1, "PSU__FPGA_PL1_ENABLE": 0, "PSU__FPGA_PL2_ENABLE": 0,
                 "PSU__FPGA_PL3_ENABLE": 0, "PSU__USE__M_AXI_GP0": 1, "C_MAXIGP0_DATA_WIDTH": 128}
    for i, (d0, d1, mhz) in enumerate([(6, 1, 249.997498), (15, 1, 99.999001),
                                       (15, 1, 99.999001), (15, 1, 99.999001)]):
        ps_params.update({f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR0": d0,
                          f"PSU__CRL_APB__PL{i}_REF_CTRL__DIVISOR1": d1,
                          f"PSU__CRL_APB__PL{i}_REF_CTRL__SRCSEL": "IOPLL",
                          f"PSU__CRL_APB__PL{i}_REF_CTRL__ACT_FREQMHZ": mhz,
                          f"PSU__CRL_APB__PL{i}_REF_CTRL__FREQMHZ": round(mhz)})
    ps_params["PSU__USE__S_AXI_GP0"] = 0                      # HPC0: not used
    for hp, (gp, _prefix) in PS_SLAVES.items():
        ps_params[f"PSU__USE__S_AXI_GP{gp}"] = 1
        ps_params[f"C_SAXIGP{gp}_DATA_WIDTH"] = PORT_BITS
    ps_params["PSU__USE__S_AXI_ACP"] = 0                       # no coherent port anywhere
    for k, v in ps_params.items():
        out.append(f'        <PARAMETER {_attrs(NAME=k, VALUE=v)}/>')
    out.append("      </PARAMETERS>")
    out += net.lines(PS)
    out.append("      <BUSINTERFACES>")
    out += _businterface("M_AXI_HPM0_FPD", "MASTER", f"{PS}_M_AXI_HPM0_FPD", AXI_LITE, 32,
                         {"DATA_WIDTH": 32, "PROTOCOL": "AXI4LITE"})
    for hp, masters in by_port.items():
        src = f"{IP}_{masters[0]}" if len(masters) == 1 else f"smc_{PS_SLAVES[hp][1].lower()}_M00_AXI"
        out += _businterface(hp, "SLAVE", src, AXI_FULL, PORT_BITS,
                             {"DATA_WIDTH": PORT_BITS, "PROTOCOL": "AXI4"})
    out.append("      </BUSINTERFACES>")
    out += ["      <MEMORYMAP>",
            f'        <MEMRANGE {_attrs(ADDRESSBLOCK="Reg", BASENAME="C_S_AXI_CONTROL_BASEADDR", BASEVALUE=f"0x{CONTROL_BASE:08X}", HIGHNAME="C_S_AXI_CONTROL_HIGHADDR", HIGHVALUE=f"0x{CONTROL_HIGH:08X}", INSTANCE=IP, IS_DATA="TRUE", IS_INSTRUCTION="TRUE", MASTERBUSINTERFACE="M_AXI_HPM0_FPD", MEMTYPE="REGISTER", SLAVEBUSINTERFACE="s_axi_control")}/>',
            "      </MEMORYMAP>", "    </MODULE>", "  </MODULES>", "", "</EDKSYSTEM>", ""]
    return "\n".join(out)


if __name__ == "__main__":
    path = Path(__file__).resolve().parent / f"{NAME}.hwh"
    path.write_text(build())
    print(f"wrote {path}")
