//go:build cgo && linux

package ort

import (
	"bufio"
	"debug/elf"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// releaseCode drops the runtime library's code pages from this process's
// resident set. Loading the library and creating a session run through
// most of its 20-35 MB of code once (static kernel registrations, graph
// optimisers); inference afterwards uses a small part. The pages stay in
// the page cache, so the part inference needs comes back as a minor fault.
// Only r-xp mappings of a library without text relocations are touched:
// their content is the file's, never a modified private copy. It returns
// the bytes of code mappings it released.
func releaseCode(lib string) int64 {
	real, err := filepath.EvalSymlinks(lib)
	if err != nil || textRelocations(real) {
		return 0
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0
	}
	defer f.Close()
	var released int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "r-xp" || fields[5] != real {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), uintptr(end-start), syscall.MADV_DONTNEED); errno == 0 {
			released += int64(end - start)
		}
	}
	return released
}

// textRelocations reports whether the library patches its own code at
// load time (DT_TEXTREL), which would make its code pages private copies.
func textRelocations(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return true
	}
	defer f.Close()
	if v, _ := f.DynValue(elf.DT_TEXTREL); len(v) > 0 {
		return true
	}
	flags, _ := f.DynValue(elf.DT_FLAGS)
	return len(flags) > 0 && elf.DynFlag(flags[0])&elf.DF_TEXTREL != 0
}
