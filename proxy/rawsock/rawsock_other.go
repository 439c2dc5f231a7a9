//go:build !linux

package rawsock

const supported = false
