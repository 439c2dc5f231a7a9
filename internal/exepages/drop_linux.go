package exepages

import "syscall"

// Drop unmaps every resident page of the executable's code and read-only
// data from this process (MADV_DONTNEED) and returns how many bytes of
// mappings it covered. The pages stay in the page cache; those still in
// use come back on their next touch.
func Drop() (int, error) {
	ms, err := exeMappings()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range ms {
		// The mapping is not Go memory: it is named by address alone.
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, m.Start, m.End-m.Start, syscall.MADV_DONTNEED); errno != 0 {
			return n, errno
		}
		n += int(m.End - m.Start)
	}
	return n, nil
}
