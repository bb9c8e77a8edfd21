package client

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT from linux/in.h.
const ipBindAddressNoPort = 24

// deferPortChoice lets connect(), not bind(), choose the local port when a
// source address is given (load tools spread over 127.0.0.x): connect()
// can reuse ports in TIME_WAIT towards other destinations, bind() cannot,
// so repeated runs would otherwise run out of ports.
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
