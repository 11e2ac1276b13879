package apns

// controlByte returns the index of the first control character (below
// space, or DEL) in s, or -1: the bytes an HTTP/2 header value may not
// carry, but for the tab, which no apns-* value needs either.
func controlByte(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return i
		}
	}
	return -1
}
