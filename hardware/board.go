package hardware

import (
	"bufio"
	"io/fs"
	"runtime"
	"slices"
	"strings"
)

// Kind is the broad class of machine the firmware runs on.
type Kind string

// Kinds reported by DetectBoard.
const (
	KindRaspberryPi Kind = "rpi"
	KindX86         Kind = "x86" // bare-metal amd64 box
	KindVM          Kind = "vm"  // any hypervisor guest, whatever the architecture
	KindUnknown     Kind = "unknown"
)

// Board identifies the machine. Model is a human-readable name from the
// device tree, DMI or /proc/cpuinfo; it may be empty.
type Board struct {
	Kind  Kind
	Model string
}

// String renders the board for logs, e.g. "rpi (Raspberry Pi 5 Model B Rev 1.0)".
func (b Board) String() string {
	k := b.Kind
	if k == "" {
		k = KindUnknown
	}
	if b.Model == "" {
		return string(k)
	}
	return string(k) + " (" + b.Model + ")"
}

// DetectBoard classifies the machine from the kernel files under root (on
// the device, os.DirFS("/")). It never fails: missing or unreadable files
// only make the answer less specific, ending at KindUnknown.
func DetectBoard(root fs.FS) Board {
	return detectBoard(root, runtime.GOARCH)
}

func detectBoard(root fs.FS, goarch string) Board {
	var dtModel string
	if b, err := readFile(root, "proc/device-tree/model"); err == nil {
		dtModel = cleanString(b)
		if strings.HasPrefix(dtModel, "Raspberry Pi") {
			return Board{Kind: KindRaspberryPi, Model: dtModel}
		}
	}
	vendor := readDMI(root, "sys_vendor")
	product := readDMI(root, "product_name")
	dmiModel := strings.TrimSpace(vendor + " " + product)
	cpuModel, hypervisor := scanCPUInfo(root)

	model := firstNonEmpty(dmiModel, dtModel, cpuModel)
	switch {
	case isVMDMI(vendor, product), hypervisor:
		return Board{Kind: KindVM, Model: model}
	case goarch == "amd64" || goarch == "386":
		return Board{Kind: KindX86, Model: firstNonEmpty(dmiModel, cpuModel)}
	}
	return Board{Kind: KindUnknown, Model: model}
}

func readDMI(root fs.FS, name string) string {
	b, err := readFile(root, "sys/class/dmi/id/"+name)
	if err != nil {
		return ""
	}
	return cleanString(b)
}

// isVMDMI recognises the SMBIOS strings hypervisors put in their guests.
func isVMDMI(vendor, product string) bool {
	v, p := strings.ToLower(vendor), strings.ToLower(product)
	if strings.Contains(v, "microsoft") && p == "virtual machine" { // Hyper-V
		return true
	}
	vendors := []string{"qemu", "vmware", "innotek", "xen", "bochs", "parallels", "bhyve", "cloud hypervisor"}
	products := []string{"kvm", "qemu", "virtualbox", "vmware", "hvm domu", "standard pc (", "google compute engine", "bochs"}
	has := func(s string) func(string) bool { return func(sub string) bool { return strings.Contains(s, sub) } }
	return slices.ContainsFunc(vendors, has(v)) || slices.ContainsFunc(products, has(p))
}

// scanCPUInfo returns the first "model name" and whether the first "flags"
// line carries the "hypervisor" bit (set by x86 hypervisors for guests).
func scanCPUInfo(root fs.FS) (model string, hypervisor bool) {
	f, err := root.Open("proc/cpuinfo")
	if err != nil {
		return "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "model name":
			if model == "" {
				model = cleanString([]byte(val))
			}
		case "flags":
			return model, slices.Contains(strings.Fields(val), "hypervisor")
		}
	}
	return model, false
}

func firstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}
