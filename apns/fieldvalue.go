package apns

// Checks of the values Validate sends as HTTP/2 header fields.

// controlByte returns the index of the first control character (below
// space, or DEL) in s, or -1: NUL, CR and LF an HTTP/2 header value may not
// carry (RFC 9113 §8.2.1), the others an HTTP field value may not (RFC 9110
// §5.5; the tab, which it allows, no apns-* value needs either).
func controlByte(s string) int {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return i
		}
	}
	return -1
}

// paddedValue reports whether s starts or ends with a space, which an
// HTTP/2 field value may not (RFC 9113 §8.2.1).
func paddedValue(s string) bool {
	return s != "" && (s[0] == ' ' || s[len(s)-1] == ' ')
}
