/**
 * A Message-ID as the API takes one for In-Reply-To and References: one token of printable ASCII
 * without angle brackets inside, with or without the brackets around it. It goes into a header
 * field as it is: no whitespace, no line break.
 */
export const MESSAGE_ID = /^(?:<[\x21-\x3b\x3d\x3f-\x7e]{1,996}>|[\x21-\x3b\x3d\x3f-\x7e]{1,996})$/;
