# Dry-run stand-in for vitis_hls and vivado: sources a generated script with every vendor command the
# flow calls defined here. Each call is RECORDED (one JSON object per line in $MMFREE_DRY_RUN_LOG) and
# CHECKED against a small model of the tool: the Vitis HLS project/solution order, the real option names
# of config_interface/config_export, the m_axi bundles of the C++ (found by preprocessing it with g++),
# the IP catalog, a block-design netlist whose PS pins exist only when their ports are enabled, address
# paths, and validate_bd_design's "enabled interface without clock" error (BD 41-758).
# Run as:  tclsh dry_run_stub.tcl -f vitis_hls.tcl   |   tclsh dry_run_stub.tcl -mode batch -source vivado_bd.tcl
# Environment: MMFREE_DRY_RUN_LOG (required), MMFREE_STUB_BOARD_PARTS (installed board parts),
# MMFREE_STUB_WNS / MMFREE_STUB_WHS (slack after implementation), MMFREE_STUB_CXX_INCLUDE (ap_types dir).

set ::tool [expr {[lsearch $argv -source] >= 0 ? "vivado" : "vitis_hls"}]
set ::log [open $::env(MMFREE_DRY_RUN_LOG) a]

proc jstr {s} {
    return "\"[string map [list \\ \\\\ \" \\\" \n \\n \t \\t \r \\r] $s]\""
}
proc jlist {l} {
    set parts {}
    foreach x $l { lappend parts [jstr $x] }
    return "\[[join $parts {, }]\]"
}
proc jdict {d} {
    set parts {}
    dict for {k v} $d { lappend parts "[jstr $k]: [jstr $v]" }
    return "\{[join $parts {, }]\}"
}
# record cmd args ?extra-json-fields?
proc record {cmd arglist {extra {}}} {
    set line "\{\"tool\": [jstr $::tool], \"cmd\": [jstr $cmd], \"args\": [jlist $arglist]"
    foreach {k v} $extra { append line ", [jstr $k]: $v" }
    puts $::log "$line\}"
    flush $::log
}
proc fail {msg} {
    record __error__ [list $msg]
    error $msg
}
proc touch {path {text ""}} {
    file mkdir [file dirname $path]
    set f [open $path w]; puts -nonewline $f $text; close $f
}
# -opt value / -opt=value / -flag parsing into a dict (flags get 1)
proc opts {arglist {flags {}}} {
    set d {}; set rest {}
    for {set i 0} {$i < [llength $arglist]} {incr i} {
        set a [lindex $arglist $i]
        if {[string match -* $a]} {
            if {[string first = $a] > 0} {
                dict set d [lindex [split $a =] 0] [join [lrange [split $a =] 1 end] =]
            } elseif {$a in $flags} {
                dict set d $a 1
            } else {
                incr i; dict set d $a [lindex $arglist $i]
            }
        } else { lappend rest $a }
    }
    return [list $d $rest]
}
proc unknown {args} { fail "dry run: command not modelled by the stub: [lindex $args 0]" }
rename exit __exit
proc exit {args} { record exit $args; close $::log; __exit 0 }

# ============================================================= Vitis HLS
set ::hls [dict create project "" solution "" top "" sources {} tb {} part "" clock "" synth 0 cflags {}]
proc need {key what} {
    if {[dict get $::hls $key] eq "" || [dict get $::hls $key] == 0} { fail "$what before $key" }
}
proc open_project {args} {
    record open_project $args
    lassign [opts $args {-reset}] o rest
    dict set ::hls project [lindex $rest 0]
}
proc set_top {args} { record set_top $args; need project set_top; dict set ::hls top [lindex $args 0] }
proc add_files {args} {
    record add_files $args
    if {$::tool eq "vivado"} { return }
    need project add_files
    lassign [opts $args {-tb}] o rest
    set f [lindex $rest 0]
    if {![file isfile $f]} { fail "ERROR: \[HLS 200-70\] Cannot find source file $f" }
    if {[dict exists $o -tb]} { dict lappend ::hls tb $f } else { dict lappend ::hls sources $f }
    if {[dict exists $o -cflags]} { dict set ::hls cflags [dict get $o -cflags] }
}
proc open_solution {args} {
    record open_solution $args
    need project open_solution
    lassign [opts $args {-reset}] o rest
    if {[dict get $o -flow_target] ni {vivado vitis}} { fail "bad -flow_target" }
    dict set ::hls solution [file join [dict get $::hls project] [lindex $rest 0]]
}
proc set_part {args} { record set_part $args; need solution set_part; dict set ::hls part [lindex $args 0] }
proc create_clock {args} {
    record create_clock $args
    need solution create_clock
    lassign [opts $args] o rest
    if {![string is double -strict [dict get $o -period]]} { fail "create_clock: bad period" }
    dict set ::hls clock [dict get $o -period]
}
set ::config_interface_options {-clock_enable -default_slave_interface -m_axi_addr64 -m_axi_alignment_byte_size
    -m_axi_auto_id_channel -m_axi_auto_max_ports -m_axi_buffer_impl -m_axi_conservative_mode -m_axi_flush_mode
    -m_axi_latency -m_axi_max_bitwidth -m_axi_max_read_burst_length -m_axi_max_widen_bitwidth
    -m_axi_max_write_burst_length -m_axi_min_bitwidth -m_axi_num_read_outstanding -m_axi_num_write_outstanding
    -m_axi_offset -register_reverse_order -s_axilite_auto_restart_counter -s_axilite_data64
    -s_axilite_interrupt_mode -s_axilite_mailbox -s_axilite_status_regs -s_axilite_sw_reset}
proc config_interface {args} {
    lassign [opts $args] o rest
    record config_interface $args [list options [jdict $o]]
    need solution config_interface
    dict for {k v} $o {
        if {$k ni $::config_interface_options} { fail "config_interface: unknown option $k" }
        if {$k in {-m_axi_max_read_burst_length -m_axi_max_write_burst_length} && !($v >= 1 && $v <= 256)} {
            fail "config_interface: $k $v out of 1..256"
        }
        if {$k in {-m_axi_max_widen_bitwidth -m_axi_alignment_byte_size} && ($v & ($v - 1)) != 0} {
            fail "config_interface: $k $v is not a power of two"
        }
    }
}
proc config_export {args} {
    lassign [opts $args] o rest
    record config_export $args [list options [jdict $o]]
    need solution config_export
    foreach k [dict keys $o] {
        if {$k ni {-description -display_name -format -ipname -library -rtl -vendor -version -output
                   -taxonomy -vivado_clock -vivado_optimization_level -vivado_phys_opt -vivado_report_level}} {
            fail "config_export: unknown option $k"
        }
    }
    dict set ::hls export $o
}
proc cxx_args {} {
    set a {}
    foreach w [dict get $::hls cflags] {
        if {[string match -I* $w] || [string match -D* $w] || [string match -std=* $w]} { lappend a $w }
    }
    if {[info exists ::env(MMFREE_STUB_CXX_INCLUDE)]} { lappend a -I$::env(MMFREE_STUB_CXX_INCLUDE) }
    return $a
}
proc csim_design {args} {
    record csim_design $args
    need solution csim_design
    if {[llength [dict get $::hls tb]] == 0} { fail "ERROR: \[SIM 211-100\] csim_design: no testbench files" }
    if {[info exists ::env(MMFREE_STUB_RUN_CSIM)]} {
        set exe [file join [dict get $::hls solution] csim build csim.exe]
        file mkdir [file dirname $exe]
        exec g++ -O1 {*}[cxx_args] {*}[dict get $::hls sources] {*}[dict get $::hls tb] -o $exe
        set out [exec $exe {*}[lindex [opts $args] 0 1]]
        record csim_result [list $out]
    }
}
# The interface of the top as Vitis HLS would see it: INTERFACE pragmas after preprocessing.
proc interfaces {} {
    set text ""
    foreach src [dict get $::hls sources] {
        append text [exec g++ -E -P -x c++ {*}[cxx_args] $src] "\n"
    }
    set masters {}; set control {}
    foreach line [split $text \n] {
        if {![regexp {^\s*#\s*pragma\s+HLS\s+INTERFACE\s+(.*)$} $line -> body]} { continue }
        set kind ""; set bundle ""
        regexp -nocase {(?:mode=)?\m(m_axi|s_axilite)\M} $body -> kind
        regexp {bundle=(\w+)} $body -> bundle
        if {$kind eq "m_axi"} {
            if {$bundle eq ""} { fail "m_axi pragma without bundle: $line" }
            if {"m_axi_$bundle" ni $masters} { lappend masters m_axi_$bundle }
        } elseif {$kind eq "s_axilite"} {
            if {$bundle ne "" && "s_axi_$bundle" ni $control} { lappend control s_axi_$bundle }
        }
    }
    return [list [lsort $masters] $control]
}
proc csynth_design {args} {
    record csynth_design $args
    foreach k {solution top part clock} { need $k csynth_design }
    lassign [interfaces] masters control
    if {[llength $control] != 1} { fail "csynth_design: expected one s_axilite bundle, found {$control}" }
    dict set ::hls masters $masters
    dict set ::hls control $control
    record __interfaces__ {} [list masters [jlist $masters] control [jstr [lindex $control 0]]]
    set top [dict get $::hls top]
    set dir [file join [dict get $::hls solution] syn report]
    touch [file join $dir ${top}_csynth.rpt] "== Vitis HLS Report for '$top'"
    touch [file join $dir ${top}_csynth.xml] [string map [list TOP $top PART [dict get $::hls part] CLK [dict get $::hls clock]] {<profile>
  <UserAssignments><TopModelName>TOP</TopModelName><Part>PART</Part><TargetClockPeriod>CLK</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates><SummaryOfTimingAnalysis><EstimatedClockPeriod>3.90</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><Worst-caseLatency>1000</Worst-caseLatency><Interval-max>1001</Interval-max></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates><Resources><BRAM_18K>10</BRAM_18K><DSP>2</DSP><FF>3000</FF><LUT>5000</LUT><URAM>0</URAM></Resources>
    <AvailableResources><BRAM_18K>280</BRAM_18K><DSP>220</DSP><FF>106400</FF><LUT>53200</LUT><URAM>0</URAM></AvailableResources></AreaEstimates>
</profile>}]
    dict set ::hls synth 1
}
proc cosim_design {args} {
    record cosim_design $args
    need synth cosim_design
    if {[llength [dict get $::hls tb]] == 0} { fail "cosim_design: no testbench" }
}
proc export_design {args} {
    record export_design $args
    need synth export_design
    set e [dict get $::hls export]
    set vlnv "[dict get $e -vendor]:[dict get $e -library]:[dict get $e -ipname]:[dict get $e -version]"
    if {[dict get $e -ipname] ne [dict get $::hls top]} { fail "export: ipname differs from the top" }
    set ipdir [file join [dict get $::hls solution] impl ip]
    touch [file join $ipdir component.stub] [list vlnv $vlnv masters [dict get $::hls masters] \
        control [lindex [dict get $::hls control] 0]]
    touch [file join $ipdir [string map {: _ . _} $vlnv].zip] "zip"
    record __exported__ {} [list vlnv [jstr $vlnv]]
}

# ============================================================= Vivado
set ::viv [dict create project "" board_part "" repos {} catalog {} bd "" validated 0 impl 0]
set ::cells {}      ;# name -> vlnv
set ::props {}      ;# cell name -> dict of CONFIG
set ::netof {}      ;# pin -> net id
set ::nextnet 0
set ::intf {}       ;# intf pin -> peer intf pin
set ::addr {}       ;# address space -> list of segments
set ::PS7 xilinx.com:ip:processing_system7:5.5
set ::PS8 xilinx.com:ip:zynq_ultra_ps_e:3.5
set ::RST xilinx.com:ip:proc_sys_reset:5.0
set ::SC  xilinx.com:ip:smartconnect:1.0

proc current_project {args} { return proj }
proc current_fileset {args} { return sources_1 }
proc create_project {args} {
    record create_project $args
    lassign [opts $args {-force}] o rest
    dict set ::viv project [lindex $rest 1]
    dict set ::viv name [lindex $rest 0]
    dict set ::viv part [dict get $o -part]
}
proc get_board_parts {args} {
    record get_board_parts $args
    return [expr {[info exists ::env(MMFREE_STUB_BOARD_PARTS)] ? $::env(MMFREE_STUB_BOARD_PARTS) : ""}]
}
proc update_ip_catalog {args} {
    record update_ip_catalog $args
    foreach repo [dict get $::viv repos] {
        foreach f [glob -nocomplain -directory $repo component.stub */component.stub] {
            set fh [open $f]; set c [read $fh]; close $fh
            dict set ::viv catalog [dict get $c vlnv] $c
        }
    }
}
proc create_bd_design {args} { record create_bd_design $args; dict set ::viv bd [lindex $args 0] }

# ---- the PS model: pins exist only when their port is enabled
proc ps_family {} {
    dict for {c v} $::cells { if {$v eq $::PS7} { return zynq7 } elseif {$v eq $::PS8} { return zynq_ultra } }
    return ""
}
# port -> {enable-property clock-pin ddr-segments}
set ::ps_ports(zynq7) {
    M_AXI_GP0 {CONFIG.PCW_USE_M_AXI_GP0 M_AXI_GP0_ACLK {}}
    M_AXI_GP1 {CONFIG.PCW_USE_M_AXI_GP1 M_AXI_GP1_ACLK {}}
    S_AXI_HP0 {CONFIG.PCW_USE_S_AXI_HP0 S_AXI_HP0_ACLK {S_AXI_HP0/HP0_DDR_LOWOCM S_AXI_HP0/HP0_HIGH_OCM}}
    S_AXI_HP1 {CONFIG.PCW_USE_S_AXI_HP1 S_AXI_HP1_ACLK {S_AXI_HP1/HP1_DDR_LOWOCM S_AXI_HP1/HP1_HIGH_OCM}}
    S_AXI_HP2 {CONFIG.PCW_USE_S_AXI_HP2 S_AXI_HP2_ACLK {S_AXI_HP2/HP2_DDR_LOWOCM S_AXI_HP2/HP2_HIGH_OCM}}
    S_AXI_HP3 {CONFIG.PCW_USE_S_AXI_HP3 S_AXI_HP3_ACLK {S_AXI_HP3/HP3_DDR_LOWOCM S_AXI_HP3/HP3_HIGH_OCM}}
    S_AXI_GP0 {CONFIG.PCW_USE_S_AXI_GP0 S_AXI_GP0_ACLK {}}
    S_AXI_GP1 {CONFIG.PCW_USE_S_AXI_GP1 S_AXI_GP1_ACLK {}}
    S_AXI_ACP {CONFIG.PCW_USE_S_AXI_ACP S_AXI_ACP_ACLK {}}
}
set ::ps_ports(zynq_ultra) {
    M_AXI_HPM0_FPD {CONFIG.PSU__USE__M_AXI_GP0 maxihpm0_fpd_aclk {}}
    M_AXI_HPM1_FPD {CONFIG.PSU__USE__M_AXI_GP1 maxihpm1_fpd_aclk {}}
    M_AXI_HPM0_LPD {CONFIG.PSU__USE__M_AXI_GP2 maxihpm0_lpd_aclk {}}
    S_AXI_HPC0_FPD {CONFIG.PSU__USE__S_AXI_GP0 saxihpc0_fpd_aclk {SAXIGP0/HPC0_DDR_LOW SAXIGP0/HPC0_DDR_HIGH SAXIGP0/HPC0_LPS_OCM}}
    S_AXI_HPC1_FPD {CONFIG.PSU__USE__S_AXI_GP1 saxihpc1_fpd_aclk {SAXIGP1/HPC1_DDR_LOW SAXIGP1/HPC1_DDR_HIGH SAXIGP1/HPC1_LPS_OCM}}
    S_AXI_HP0_FPD {CONFIG.PSU__USE__S_AXI_GP2 saxihp0_fpd_aclk {SAXIGP2/HP0_DDR_LOW SAXIGP2/HP0_DDR_HIGH SAXIGP2/HP0_LPS_OCM}}
    S_AXI_HP1_FPD {CONFIG.PSU__USE__S_AXI_GP3 saxihp1_fpd_aclk {SAXIGP3/HP1_DDR_LOW SAXIGP3/HP1_DDR_HIGH SAXIGP3/HP1_LPS_OCM}}
    S_AXI_HP2_FPD {CONFIG.PSU__USE__S_AXI_GP4 saxihp2_fpd_aclk {SAXIGP4/HP2_DDR_LOW SAXIGP4/HP2_DDR_HIGH SAXIGP4/HP2_LPS_OCM}}
    S_AXI_HP3_FPD {CONFIG.PSU__USE__S_AXI_GP5 saxihp3_fpd_aclk {SAXIGP5/HP3_DDR_LOW SAXIGP5/HP3_DDR_HIGH SAXIGP5/HP3_LPS_OCM}}
    S_AXI_LPD {CONFIG.PSU__USE__S_AXI_GP6 saxi_lpd_aclk {}}
    S_AXI_ACP_FPD {CONFIG.PSU__USE__S_AXI_ACP saxiacp_fpd_aclk {}}
    S_AXI_ACE_FPD {CONFIG.PSU__USE__S_AXI_ACE sacefpd_aclk {}}
}
# Other PS properties the flow may set, with the values the IP accepts ({} = any number).
set ::ps_other(zynq7) {
    CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ {} CONFIG.PCW_EN_CLK0_PORT {0 1} CONFIG.PCW_EN_RST0_PORT {0 1}
    CONFIG.PCW_S_AXI_HP0_DATA_WIDTH {32 64} CONFIG.PCW_S_AXI_HP1_DATA_WIDTH {32 64}
    CONFIG.PCW_S_AXI_HP2_DATA_WIDTH {32 64} CONFIG.PCW_S_AXI_HP3_DATA_WIDTH {32 64}
}
set ::ps_other(zynq_ultra) {
    CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {} CONFIG.PSU__FPGA_PL0_ENABLE {0 1}
    CONFIG.PSU__SAXIGP0__DATA_WIDTH {32 64 128} CONFIG.PSU__SAXIGP1__DATA_WIDTH {32 64 128}
    CONFIG.PSU__SAXIGP2__DATA_WIDTH {32 64 128} CONFIG.PSU__SAXIGP3__DATA_WIDTH {32 64 128}
    CONFIG.PSU__SAXIGP4__DATA_WIDTH {32 64 128} CONFIG.PSU__SAXIGP5__DATA_WIDTH {32 64 128}
    CONFIG.PSU__SAXIGP6__DATA_WIDTH {32 64 128}
}
set ::ps_clock(zynq7) {FCLK_CLK0 FCLK_RESET0_N CONFIG.PCW_EN_CLK0_PORT CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ}
set ::ps_clock(zynq_ultra) {pl_clk0 pl_resetn0 CONFIG.PSU__FPGA_PL0_ENABLE CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ}

proc psprop {name {default 0}} {
    if {[dict exists $::props ps $name]} { return [dict get $::props ps $name] }
    return $default
}
proc ps_enabled_ports {} {
    set fam [ps_family]; set out {}
    dict for {port info} $::ps_ports($fam) {
        if {[psprop [lindex $info 0]] == 1} { lappend out $port }
    }
    return $out
}
# every pin of a cell that exists now: {intf pins} {plain pins}
proc cell_pins {cell} {
    set v [dict get $::cells $cell]
    if {$v in [list $::PS7 $::PS8]} {
        set fam [ps_family]; set intf {}; set pins {}
        lassign $::ps_clock($fam) clk rst en
        if {[psprop $en 1] == 1} { lappend pins $clk $rst }
        foreach port [ps_enabled_ports] {
            lappend intf $port
            lappend pins [lindex [dict get $::ps_ports($fam) $port] 1]
        }
        return [list $intf $pins]
    } elseif {$v eq $::RST} {
        return [list {} {slowest_sync_clk ext_reset_in aux_reset_in mb_debug_sys_rst dcm_locked
            peripheral_aresetn interconnect_aresetn peripheral_reset mb_reset bus_struct_reset}]
    } elseif {$v eq $::SC} {
        set intf {}
        for {set i 0} {$i < [psval $cell CONFIG.NUM_SI 1]} {incr i} { lappend intf [format S%02d_AXI $i] }
        for {set i 0} {$i < [psval $cell CONFIG.NUM_MI 1]} {incr i} { lappend intf [format M%02d_AXI $i] }
        return [list $intf {aclk aresetn}]
    } else {
        set c [dict get $::viv catalog $v]
        return [list [concat [dict get $c masters] [dict get $c control]] {ap_clk ap_rst_n}]
    }
}
proc psval {cell name default} {
    if {[dict exists $::props $cell $name]} { return [dict get $::props $cell $name] }
    return $default
}
proc resolve {path kind} {
    set path [string trimleft $path /]
    set cell [lindex [split $path /] 0]; set pin [join [lrange [split $path /] 1 end] /]
    if {![dict exists $::cells $cell]} { return "" }
    lassign [cell_pins $cell] intf pins
    set have [expr {$kind eq "intf" ? $intf : $pins}]
    return [expr {$pin in $have ? "/$cell/$pin" : ""}]
}
proc create_bd_cell {args} {
    record create_bd_cell $args
    if {[dict get $::viv bd] eq ""} { fail "create_bd_cell before create_bd_design" }
    lassign [opts $args] o rest
    set v [dict get $o -vlnv]; set name [lindex $rest 0]
    if {$v ni [list $::PS7 $::PS8 $::RST $::SC] && ![dict exists $::viv catalog $v]} {
        fail "ERROR: \[BD 5-216\] VLNV <$v> is not supported for the current part (not in the IP catalog)"
    }
    dict set ::cells $name $v
    dict set ::props $name {}
    if {$v eq $::PS7} { dict set ::props $name {CONFIG.PCW_USE_M_AXI_GP0 1 CONFIG.PCW_EN_CLK0_PORT 1} }
    if {$v eq $::PS8} {
        # zynq_ultra_ps_e defaults: both FPD masters on (UG1085 / PG201).
        dict set ::props $name {CONFIG.PSU__USE__M_AXI_GP0 1 CONFIG.PSU__USE__M_AXI_GP1 1 CONFIG.PSU__FPGA_PL0_ENABLE 1}
    }
    return /$name
}
proc apply_bd_automation {args} {
    lassign [opts $args] o rest
    set cfg [dict get $o -config]
    record apply_bd_automation $args [list config [jdict $cfg]]
    set cell [string trimleft [lindex $rest 0] /]
    set rule [dict get $o -rule]
    if {$rule ni {xilinx.com:bd_rule:processing_system7 xilinx.com:bd_rule:zynq_ultra_ps_e}} {
        fail "dry run: automation rule $rule is not modelled (wire the design explicitly)"
    }
    if {[dict get $cfg apply_board_preset] == 1} {
        if {[dict get $::viv board_part] eq ""} { fail "apply_board_preset 1 without a board_part" }
        # Board presets of ZCU104/KV260 turn HPM0/HPM1 FPD (and the LPD master) on.
        if {$rule eq "xilinx.com:bd_rule:zynq_ultra_ps_e"} {
            dict set ::props $cell CONFIG.PSU__USE__M_AXI_GP2 1
        }
    }
}
proc set_property {args} {
    if {[lindex $args 0] eq "-dict"} {
        set d [lindex $args 1]; set obj [string trimleft [lindex $args 2] /]
        record set_property $args [list object [jstr $obj] props [jdict $d]]
        if {![dict exists $::cells $obj]} { fail "set_property -dict on unknown object $obj" }
        set v [dict get $::cells $obj]
        if {$v in [list $::PS7 $::PS8]} {
            set fam [ps_family]
            set enables {}
            dict for {port info} $::ps_ports($fam) { lappend enables [lindex $info 0] }
            dict for {k val} $d {
                if {$k in $enables} {
                    if {$val ni {0 1}} { fail "$k = $val" }
                } elseif {[dict exists $::ps_other($fam) $k]} {
                    set ok [dict get $::ps_other($fam) $k]
                    if {$ok eq "" ? ![string is double -strict $val] : $val ni $ok} { fail "$k = $val not accepted" }
                } else {
                    fail "ERROR: \[BD 41-...\] $obj has no parameter $k"
                }
            }
        } elseif {$v eq $::SC} {
            dict for {k val} $d { if {$k ni {CONFIG.NUM_SI CONFIG.NUM_MI}} { fail "smartconnect: no $k" } }
        } else { fail "set_property -dict on $obj not modelled" }
        dict set ::props $obj [dict merge [dict get $::props $obj] $d]
        return
    }
    lassign $args name value obj
    record set_property $args [list object [jstr $obj]]
    switch -- $name {
        board_part { dict set ::viv board_part $value }
        board_connections { if {[dict get $::viv board_part] eq ""} { fail "board_connections without board_part" } }
        ip_repo_paths { dict set ::viv repos $value }
        top { dict set ::viv top $value }
        default { fail "set_property $name not modelled" }
    }
}
proc get_bd_intf_pins {args} {
    lassign [opts $args {-quiet}] o rest
    if {[dict exists $o -of_objects]} {
        set cell [string trimleft [dict get $o -of_objects] /]
        set out {}
        if {[dict get $o -filter] ne {MODE == Master}} { fail "filter not modelled" }
        set v [dict get $::cells $cell]
        foreach m [dict get [dict get $::viv catalog $v] masters] { lappend out /$cell/$m }
        record get_bd_intf_pins $args [list result [jlist $out]]
        return $out
    }
    set r [resolve [lindex $rest 0] intf]
    record get_bd_intf_pins $args [list result [jstr $r]]
    return $r
}
proc get_bd_pins {args} {
    set r [resolve [lindex $args end] pin]
    record get_bd_pins $args [list result [jstr $r]]
    return $r
}
proc get_property {args} {
    lassign $args name obj
    set r ""
    switch -glob -- $name {
        PROGRESS { set r "100%" }
        STATS.WNS { set r [expr {[info exists ::env(MMFREE_STUB_WNS)] ? $::env(MMFREE_STUB_WNS) : 0.412}] }
        STATS.WHS { set r [expr {[info exists ::env(MMFREE_STUB_WHS)] ? $::env(MMFREE_STUB_WHS) : 0.021}] }
        STATS.TNS { set r [expr {min(0, 25 * [get_property STATS.WNS $obj])}] }
        STATS.THS { set r [expr {min(0, 3 * [get_property STATS.WHS $obj])}] }
        CONFIG.*ACT* {
            set fam [ps_family]
            set r [psprop [lindex $::ps_clock($fam) 3] 100]
        }
        default { fail "get_property $name not modelled" }
    }
    record get_property $args [list result [jstr $r]]
    return $r
}
proc connect_bd_net {args} {
    record connect_bd_net $args
    if {[llength $args] < 2} { fail "connect_bd_net needs two pins" }
    set net ""
    foreach p $args {
        if {$p eq ""} { fail "ERROR: \[BD 5-106\] connect_bd_net: a pin does not exist (port not enabled?)" }
        if {[dict exists $::netof $p]} {
            set n [dict get $::netof $p]
            if {$net ne "" && $net ne $n} {
                # merge
                dict for {q m} $::netof { if {$m eq $n} { dict set ::netof $q $net } }
            } else { set net $n }
        }
    }
    if {$net eq ""} { set net [incr ::nextnet] }
    foreach p $args { dict set ::netof $p $net }
}
proc connect_bd_intf_net {args} {
    record connect_bd_intf_net $args
    lassign $args a b
    foreach p [list $a $b] {
        if {$p eq ""} { fail "ERROR: \[BD 5-106\] connect_bd_intf_net: an interface pin does not exist (port not enabled?)" }
        if {[dict exists $::intf $p]} { fail "ERROR: \[BD 5-...\] $p is already connected" }
    }
    dict set ::intf $a $b
    dict set ::intf $b $a
}
proc get_bd_addr_spaces {args} {
    set path [string trimleft [lindex $args end] /]
    set cell [lindex [split $path /] 0]; set space [lindex [split $path /] 1]
    set r ""
    if {[dict exists $::cells $cell]} {
        set v [dict get $::cells $cell]
        if {$v in [list $::PS7 $::PS8] && $space eq "Data"} { set r /$path }
        if {[dict exists $::viv catalog $v] && [string match Data_* $space]
            && [string range $space 5 end] in [dict get [dict get $::viv catalog $v] masters]} { set r /$path }
    }
    record get_bd_addr_spaces $args [list result [jstr $r]]
    return $r
}
proc get_bd_addr_segs {args} {
    lassign [opts $args {-quiet}] o rest
    set path [string trimleft [lindex $rest 0] /]
    set parts [split $path /]
    set cell [lindex $parts 0]; set r ""
    if {[dict exists $::cells $cell]} {
        set v [dict get $::cells $cell]
        if {$v in [list $::PS7 $::PS8]} {
            set fam [ps_family]
            foreach port [ps_enabled_ports] {
                foreach seg [lindex [dict get $::ps_ports($fam) $port] 2] {
                    if {"$cell/$seg" eq $path} { set r /$path }
                }
            }
        } elseif {[dict exists $::viv catalog $v] && [lindex $parts 2] eq "Reg"
                  && [lindex $parts 1] eq [dict get [dict get $::viv catalog $v] control]} {
            set r /$path
        }
    }
    record get_bd_addr_segs $args [list result [jstr $r]]
    if {$r eq "" && ![dict exists $o -quiet]} { fail "get_bd_addr_segs: no segment $path" }
    return $r
}
# The PS port (or IP slave) an interface path from $pin reaches through 1x1 SmartConnects.
proc reach {pin} {
    for {set hops 0} {$hops < 4} {incr hops} {
        if {![dict exists $::intf $pin]} { return "" }
        set peer [dict get $::intf $pin]
        set cell [lindex [split [string trimleft $peer /] /] 0]
        if {[dict get $::cells $cell] ne $::SC} { return $peer }
        if {[regsub {/S\d\d_AXI$} $peer /M00_AXI pin] == 0} { set pin [string map {M00_AXI S00_AXI} $peer] }
    }
    return ""
}
proc assign_bd_address {args} {
    if {[llength $args] == 0} { record assign_bd_address {} [list all [jstr 1]]; return }
    lassign [opts $args {-force}] o rest
    set space [dict get $o -target_address_space]; set seg [lindex $rest 0]
    record assign_bd_address $args [list space [jstr $space] segment [jstr $seg]]
    if {$space eq "" || $seg eq ""} { fail "assign_bd_address: empty space or segment" }
    set cell [lindex [split [string trimleft $space /] /] 0]
    set spacename [lindex [split $space /] end]
    if {$spacename eq "Data"} {
        set from /$cell/[lindex [dict keys [dict filter $::ps_ports([ps_family]) key M_AXI*]] 0]
        set found 0
        foreach port [ps_enabled_ports] {
            if {[string match M_AXI* $port]} {
                set to [reach /$cell/$port]
                if {$to ne "" && [string match "$to/*" $seg]} { set found 1 }
            }
        }
        if {!$found} { fail "ERROR: \[BD 41-1356\] $seg is not reachable from $space" }
    } else {
        set to [reach /$cell/[string range $spacename 5 end]]
        set port [lindex [split [string trimleft $to /] /] 1]
        set info [dict get $::ps_ports([ps_family]) $port]
        if {[string trimleft $seg /] ni [lmap s [lindex $info 2] {string cat ps/$s}]} {
            fail "ERROR: \[BD 41-1356\] $seg is not reachable from $space (it reaches $to)"
        }
    }
    dict lappend ::addr $space $seg
}
proc validate_bd_design {args} {
    record validate_bd_design $args
    set fam [ps_family]
    lassign $::ps_clock($fam) clkpin rstpin
    if {![dict exists $::netof /ps/$clkpin]} { fail "validate: the PL clock drives nothing" }
    set clknet [dict get $::netof /ps/$clkpin]
    foreach port [ps_enabled_ports] {
        set aclk /ps/[lindex [dict get $::ps_ports($fam) $port] 1]
        if {![dict exists $::netof $aclk] || [dict get $::netof $aclk] ne $clknet} {
            fail "ERROR: \[BD 41-758\] The following clock pins are not connected to a valid clock source: $aclk"
        }
        if {![dict exists $::intf /ps/$port]} { fail "validate: /ps/$port is enabled but not connected" }
    }
    dict for {cell v} $::cells {
        lassign [cell_pins $cell] intf pins
        if {$v eq $::SC || [dict exists $::viv catalog $v]} {
            foreach p $intf { if {![dict exists $::intf /$cell/$p]} { fail "validate: /$cell/$p unconnected" } }
            set c [expr {$v eq $::SC ? "aclk" : "ap_clk"}]
            set r [expr {$v eq $::SC ? "aresetn" : "ap_rst_n"}]
            if {![dict exists $::netof /$cell/$c] || [dict get $::netof /$cell/$c] ne $clknet} {
                fail "ERROR: \[BD 41-758\] /$cell/$c has no clock"
            }
            if {![dict exists $::netof /$cell/$r]} { fail "validate: /$cell/$r unconnected" }
        }
        if {[dict exists $::viv catalog $v]} {
            foreach m [dict get [dict get $::viv catalog $v] masters] {
                if {![dict exists $::addr /$cell/Data_$m]} { fail "validate: /$cell/Data_$m has no address segment" }
            }
        }
    }
    dict set ::viv validated 1
}
proc save_bd_design {args} { record save_bd_design $args }
proc get_files {args} {
    record get_files $args
    set n [dict get $::viv name]
    return [file join [dict get $::viv project] $n.srcs sources_1 bd [dict get $::viv bd] [lindex $args end]]
}
proc make_wrapper {args} {
    record make_wrapper $args
    set bd [dict get $::viv bd]
    return [file join [dict get $::viv project] [dict get $::viv name].gen sources_1 bd $bd hdl ${bd}_wrapper.v]
}
proc update_compile_order {args} { record update_compile_order $args }
proc get_runs {args} { return [lindex $args end] }
proc launch_runs {args} {
    record launch_runs $args
    if {![dict get $::viv validated]} { fail "launch_runs before validate_bd_design" }
    if {[dict get $::viv top] ne "[dict get $::viv bd]_wrapper"} { fail "top is not the BD wrapper" }
    set n [dict get $::viv name]; set bd [dict get $::viv bd]; set prj [dict get $::viv project]
    touch [file join $prj $n.runs impl_1 ${bd}_wrapper.bit] "BIT:$bd"
    set cells {}
    dict for {c v} $::cells { append cells "<MODULE INSTANCE=\"$c\" VLNV=\"$v\"/>" }
    touch [file join $prj $n.gen sources_1 bd $bd hw_handoff $bd.hwh] "<EDKSYSTEM><MODULES>$cells</MODULES></EDKSYSTEM>"
    dict set ::viv impl 1
}
proc wait_on_run {args} { record wait_on_run $args }
proc open_run {args} { record open_run $args; if {![dict get $::viv impl]} { fail "open_run before launch_runs" } }
proc report_utilization {args} {
    record report_utilization $args
    set fam [ps_family]
    if {$fam eq "zynq7"} {
        set t "1. Slice Logic\n--------------\n\n+----------------------------+------+-------+------------+-----------+-------+\n|          Site Type         | Used | Fixed | Prohibited | Available | Util% |\n+----------------------------+------+-------+------------+-----------+-------+\n| Slice LUTs                 | 9876 |     0 |          0 |     53200 | 18.56 |\n|   LUT as Logic             | 9100 |     0 |          0 |     53200 | 17.11 |\n| Slice Registers            | 12345 |    0 |          0 |    106400 | 11.60 |\n+----------------------------+------+-------+------------+-----------+-------+\n\n3. Memory\n---------\n\n+-------------------+------+-------+------------+-----------+-------+\n|     Site Type     | Used | Fixed | Prohibited | Available | Util% |\n+-------------------+------+-------+------------+-----------+-------+\n| Block RAM Tile    | 40.5 |     0 |          0 |       140 | 28.93 |\n|   RAMB36/FIFO*    |   38 |     0 |          0 |       140 | 27.14 |\n|   RAMB18          |    5 |     0 |          0 |       280 |  1.79 |\n+-------------------+------+-------+------------+-----------+-------+\n\n4. DSP\n------\n\n+----------------+------+-------+------------+-----------+-------+\n|    Site Type   | Used | Fixed | Prohibited | Available | Util% |\n+----------------+------+-------+------------+-----------+-------+\n| DSPs           |   12 |     0 |          0 |       220 |  5.45 |\n+----------------+------+-------+------------+-----------+-------+\n"
    } else {
        set t "1. CLB Logic\n------------\n\n+----------------------------+-------+-------+------------+-----------+-------+\n|          Site Type         |  Used | Fixed | Prohibited | Available | Util% |\n+----------------------------+-------+-------+------------+-----------+-------+\n| CLB LUTs                   | 45678 |     0 |          0 |    117120 | 39.00 |\n| CLB Registers              | 61234 |     0 |          0 |    234240 | 26.14 |\n+----------------------------+-------+-------+------------+-----------+-------+\n\n3. BLOCKRAM\n-----------\n\n+-------------------+------+-------+------------+-----------+-------+\n|     Site Type     | Used | Fixed | Prohibited | Available | Util% |\n+-------------------+------+-------+------------+-----------+-------+\n| Block RAM Tile    |   72 |     0 |          0 |       144 | 50.00 |\n| URAM              |    8 |     0 |          0 |        64 | 12.50 |\n+-------------------+------+-------+------------+-----------+-------+\n\n4. ARITHMETIC\n-------------\n\n+----------------+------+-------+------------+-----------+-------+\n|    Site Type   | Used | Fixed | Prohibited | Available | Util% |\n+----------------+------+-------+------------+-----------+-------+\n| DSPs           |   96 |     0 |          0 |      1248 |  7.69 |\n+----------------+------+-------+------------+-----------+-------+\n"
    }
    touch [lindex $args end] $t
}
proc report_timing_summary {args} {
    record report_timing_summary $args
    set wns [get_property STATS.WNS impl_1]; set whs [get_property STATS.WHS impl_1]
    set tns [get_property STATS.TNS impl_1]; set ths [get_property STATS.THS impl_1]
    set fam [ps_family]
    set mhz [psprop [lindex $::ps_clock($fam) 3] 100]
    set period [format %.3f [expr {1000.0 / $mhz}]]
    set clk [expr {$fam eq "zynq7" ? "clk_fpga_0" : "clk_pl_0"}]
    set t "------------------------------------------------------------------------------------------------\n| Design Timing Summary\n| ---------------------\n------------------------------------------------------------------------------------------------\n\n    WNS(ns)      TNS(ns)  TNS Failing Endpoints  TNS Total Endpoints      WHS(ns)      THS(ns)  THS Failing Endpoints  THS Total Endpoints     WPWS(ns)     TPWS(ns)  TPWS Failing Endpoints  TPWS Total Endpoints\n    -------      -------  ---------------------  -------------------      -------      -------  ---------------------  -------------------     --------     --------  ----------------------  --------------------\n      $wns        $tns                      0                40000        $whs        $ths                      0                40000        3.750        0.000                       0                 15000\n\n\n------------------------------------------------------------------------------------------------\n| Clock Summary\n| -------------\n------------------------------------------------------------------------------------------------\n\nClock       Waveform(ns)         Period(ns)      Frequency(MHz)\n-----       ------------         ----------      --------------\n$clk  {0.000 [format %.3f [expr {$period / 2}]]}        $period          [format %.3f $mhz]\n\n"
    touch [lindex $args end] $t
}

# ============================================================= run the script
if {[lsearch $argv -version] >= 0} {
    puts "$::tool v2023.2 (64-bit)"
    __exit 0
}
foreach flag {-f -source} {
    set i [lsearch $argv $flag]
    if {$i >= 0} {
        set argv0 [lindex $argv [expr {$i + 1}]]
        set argv {}
        if {[catch {uplevel #0 [list source $argv0]} msg]} {
            record __failed__ [list $msg]
            puts stderr "ERROR: $msg"
            close $::log
            __exit 1
        }
    }
}
