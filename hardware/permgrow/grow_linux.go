//go:build linux && (386 || amd64 || arm || arm64 || riscv64 || loong64)

package permgrow

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ext4IocResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64), in the
// asm-generic ioctl encoding shared by the architectures this file builds on.
const ext4IocResizeFS = 0x40086610

// Grow grows the partition mounted at mountpoint (which must be the last GPT
// partition of its disk, holding a mounted ext4) and then the filesystem to
// fill the disk. It must run as root on Linux.
//
// Everything is checked before the first write; any surprise (no GPT, the
// partition not being the last one, not ext4, sector size other than 512)
// is an error and leaves the disk untouched. Grow is idempotent and resumes
// interrupted runs: once the table is grown it only makes sure the kernel
// knows the new partition size (BLKPG) and that the filesystem fills it
// (EXT4_IOC_RESIZE_FS, itself journaled by ext4), so it is meant to be called
// at every start-up. Filesystem growth below MinGrow is ignored, too.
//
// ctx is checked between steps; the writes and ioctls themselves cannot be
// interrupted.
func Grow(ctx context.Context, log *slog.Logger, mountpoint string) (Result, error) {
	mountpoint = filepath.Clean(mountpoint)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Result{}, fmt.Errorf("permgrow: %w", err)
	}
	mounts, err := parseMountinfo(f)
	f.Close()
	if err != nil {
		return Result{}, fmt.Errorf("permgrow: %w", err)
	}
	m, ok := findMount(mounts, mountpoint)
	if !ok {
		return Result{}, fmt.Errorf("permgrow: nothing is mounted at %s", mountpoint)
	}
	if m.FSType != "ext4" {
		return Result{}, fmt.Errorf("permgrow: %s is %s, not ext4", mountpoint, m.FSType)
	}
	bp, err := resolvePartition("/sys", m.Major, m.Minor)
	if err != nil {
		return Result{}, fmt.Errorf("permgrow: %s: %w", mountpoint, err)
	}
	res := Result{Disk: "/dev/" + bp.Disk, Partition: "/dev/" + bp.Part}
	partDev := fmt.Sprintf("%d:%d", m.Major, m.Minor)

	// Read and check everything before writing anything.
	var st unix.Statfs_t
	if err := unix.Statfs(mountpoint, &st); err != nil {
		return res, fmt.Errorf("permgrow: statfs %s: %w", mountpoint, err)
	}
	sb, err := readExt4Super(res.Partition, partDev)
	if err != nil {
		return res, err
	}
	if sb.BlockSize != uint64(st.Bsize) {
		return res, fmt.Errorf("permgrow: %s: superblock block size %d differs from statfs block size %d", res.Partition, sb.BlockSize, st.Bsize)
	}
	res.FSBefore = int64(sb.Blocks * sb.BlockSize)
	res.FSAfter = res.FSBefore

	disk, err := openBlock(res.Disk, os.O_RDONLY, bp.DiskDev)
	if err != nil {
		return res, err
	}
	defer disk.Close()
	var size uint64
	if err := ioctlPtr(disk, unix.BLKGETSIZE64, unsafe.Pointer(&size)); err != nil {
		return res, fmt.Errorf("permgrow: BLKGETSIZE64 %s: %w", res.Disk, err)
	}
	ssz, err := unix.IoctlGetInt(int(disk.Fd()), unix.BLKSSZGET)
	if err != nil {
		return res, fmt.Errorf("permgrow: BLKSSZGET %s: %w", res.Disk, err)
	}
	if ssz != sectorSize {
		return res, fmt.Errorf("permgrow: %s has %d-byte logical sectors, only %d is supported", res.Disk, ssz, sectorSize)
	}
	plan, err := PlanGrow(disk, int64(size))
	if err != nil {
		return res, fmt.Errorf("%w (disk %s)", err, res.Disk)
	}
	if plan.Partition != bp.Number {
		return res, fmt.Errorf("permgrow: %s is partition %d, but the last partition of %s is %d", res.Partition, bp.Number, res.Disk, plan.Partition)
	}
	res.PartitionBefore, res.PartitionAfter = plan.OldSize, plan.NewSize

	if plan.NeedsGrow() {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("permgrow: %w", err)
		}
		log.Info("growing partition", "disk", res.Disk, "partition", plan.Partition, "from_bytes", plan.OldSize, "to_bytes", plan.NewSize)
		w, err := openBlock(res.Disk, os.O_RDWR|unix.O_SYNC, bp.DiskDev)
		if err != nil {
			return res, err
		}
		err = plan.Apply(w)
		if cerr := w.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("permgrow: closing %s: %w", res.Disk, cerr)
		}
		if err != nil {
			return res, fmt.Errorf("%w (disk %s)", err, res.Disk)
		}
	}

	// The kernel still has the old size if we just wrote the table, or if an
	// earlier run stopped (without a reboot) before this step.
	kernelSize, err := sysfsSize(partDev)
	if err != nil {
		return res, err
	}
	if kernelSize < plan.NewSize {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("permgrow: %w", err)
		}
		log.Info("resizing kernel partition", "partition", res.Partition, "from_bytes", kernelSize, "to_bytes", plan.NewSize)
		if err := blkpgResize(disk, plan); err != nil {
			return res, fmt.Errorf("permgrow: BLKPG_RESIZE_PARTITION %s: %w", res.Partition, err)
		}
		if kernelSize, err = sysfsSize(partDev); err != nil {
			return res, err
		}
	}

	target := uint64(min(kernelSize, plan.NewSize)) / sb.BlockSize
	if !sb.Is64Bit {
		target = min(target, 0xFFFFFFFF)
	}
	if target <= sb.Blocks || (target-sb.Blocks)*sb.BlockSize < MinGrow {
		return res, nil
	}
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("permgrow: %w", err)
	}
	log.Info("growing ext4 filesystem", "mountpoint", mountpoint, "from_blocks", sb.Blocks, "to_blocks", target, "block_size", sb.BlockSize)
	dir, err := os.Open(mountpoint)
	if err != nil {
		return res, fmt.Errorf("permgrow: %w", err)
	}
	err = ioctlPtr(dir, ext4IocResizeFS, unsafe.Pointer(&target))
	dir.Close()
	if err != nil {
		return res, fmt.Errorf("permgrow: EXT4_IOC_RESIZE_FS %s to %d blocks: %w", mountpoint, target, err)
	}
	if sb, err = readExt4Super(res.Partition, partDev); err != nil {
		return res, err
	}
	res.FSAfter = int64(sb.Blocks * sb.BlockSize)
	return res, nil
}

// openBlock opens a block device node and makes sure it is the device
// "major:minor" that sysfs named, not some stale or unrelated node.
func openBlock(path string, flag int, dev string) (*os.File, error) {
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("permgrow: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("permgrow: fstat %s: %w", path, err)
	}
	if got := fmt.Sprintf("%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))); st.Mode&unix.S_IFMT != unix.S_IFBLK || got != dev {
		f.Close()
		return nil, fmt.Errorf("permgrow: %s is not block device %s (mode %#o, device %s)", path, dev, st.Mode, got)
	}
	return f, nil
}

func readExt4Super(path, dev string) (ext4Super, error) {
	f, err := openBlock(path, os.O_RDONLY, dev)
	if err != nil {
		return ext4Super{}, err
	}
	defer f.Close()
	buf := make([]byte, 1024)
	if _, err := f.ReadAt(buf, 1024); err != nil {
		return ext4Super{}, fmt.Errorf("permgrow: reading superblock of %s: %w", path, err)
	}
	sb, err := parseExt4Super(buf)
	if err != nil {
		return ext4Super{}, fmt.Errorf("permgrow: %s: %w", path, err)
	}
	return sb, nil
}

// sysfsSize returns the kernel's current size in bytes of block device dev
// ("major:minor"); sysfs always counts in 512-byte units.
func sysfsSize(dev string) (int64, error) {
	b, err := os.ReadFile("/sys/dev/block/" + dev + "/size")
	if err != nil {
		return 0, fmt.Errorf("permgrow: %w", err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("permgrow: size of %s: %w", dev, err)
	}
	return n * 512, nil
}

// blkpgResize tells the kernel the partition's new extent without re-reading
// the table, which BLKRRPART refuses while a partition is mounted.
func blkpgResize(disk *os.File, p Plan) error {
	part := unix.BlkpgPartition{Start: p.Start, Length: p.NewSize, Pno: int32(p.Partition)}
	arg := unix.BlkpgIoctlArg{
		Op:      unix.BLKPG_RESIZE_PARTITION,
		Datalen: int32(unsafe.Sizeof(part)),
		Data:    (*byte)(unsafe.Pointer(&part)),
	}
	return ioctlPtr(disk, unix.BLKPG, unsafe.Pointer(&arg))
}

func ioctlPtr(f *os.File, req uint, arg unsafe.Pointer) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(arg)); errno != 0 {
		return errno
	}
	return nil
}
