package load

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT from linux/in.h.
const ipBindAddressNoPort = 24

// deferPortChoice lets connect(), not bind(), choose the local port of a
// connection from a given source address, so repeated runs can reuse
// ports in TIME_WAIT towards other destinations (as the Go SDK's dialer
// does).
func deferPortChoice(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
