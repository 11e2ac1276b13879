package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux
// for every architecture's user ABI.
const clockTick = 10 * time.Millisecond

// procCPU is the summed user+system CPU time of pids so far, from
// /proc/<pid>/stat (fields 14 and 15).
func procCPU(pids []int) time.Duration {
	var total time.Duration
	for _, pid := range pids {
		user, sys, ok := procTimes(pid)
		if ok {
			total += user + sys
		}
	}
	return total
}

// procTimes is the user and system CPU time of every thread of pid so far,
// from /proc/<pid>/stat (fields 14 and 15, in clockTick units).
func procTimes(pid int) (user, sys time.Duration, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return time.Duration(ut) * clockTick, time.Duration(st) * clockTick, true
}

// procSample is what /proc tells of one process at one moment. Counters
// that could not be read are -1.
type procSample struct {
	User, Sys time.Duration
	// Syscalls is syscr+syscw of /proc/<pid>/io: the read- and write-type
	// system calls of every thread, live or exited.
	Syscalls int64
	// CtxSwitches is voluntary+nonvoluntary_ctxt_switches summed over
	// /proc/<pid>/task/*/status: the live threads (Go seldom ends one).
	CtxSwitches int64
}

// sampleProc reads pid's CPU times, I/O system calls and context switches.
func sampleProc(pid int) procSample {
	s := procSample{Syscalls: procIOCalls(pid), CtxSwitches: procCtxSwitches(pid)}
	s.User, s.Sys, _ = procTimes(pid)
	return s
}

// procIOCalls is syscr+syscw of /proc/<pid>/io, -1 if unreadable.
func procIOCalls(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	var total int64
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		if k == "syscr" || k == "syscw" {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return -1
			}
			total += n
			found++
		}
	}
	if found != 2 {
		return -1
	}
	return total
}

// procCtxSwitches sums the context switches of pid's threads, -1 if none
// could be read.
func procCtxSwitches(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	total, found := int64(0), false
	for _, path := range tasks {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // the thread ended meanwhile
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, _ := strings.Cut(line, ":")
			if k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches" {
				if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
					total += n
					found = true
				}
			}
		}
	}
	if !found {
		return -1
	}
	return total
}

// procHWM is the peak resident set (VmHWM) of pid, 0 for this process, in
// bytes.
func procHWM(pid int) int64 {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v) // "123456 kB"
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
